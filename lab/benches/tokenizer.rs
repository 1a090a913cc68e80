//! Byte-level BPE encode throughput on the synthetic corpus (tokens per second).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rewind_lab::data::{CorpusConfig, Tokenizer, synthetic_corpus};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn encode(c: &mut Criterion) {
    rewind_lab::alloc_counter::keep_freed_memory();
    let texts = synthetic_corpus(CorpusConfig::default());
    let tok = Tokenizer::train(&texts, 1024).expect("the corpus trains a tokenizer");
    let tokens: usize = texts
        .iter()
        .map(|t| tok.encode(t).map_or(0, |i| i.len()))
        .sum();
    let mut g = c.benchmark_group("bpe");
    g.sample_size(10);
    g.throughput(Throughput::Elements(tokens as u64));
    g.bench_function("encode_corpus_2000_samples", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| tok.encode(t).map_or(0, |i| i.len()))
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
