//! One optimizer step on 16M parameters: 8-bit AdamW vs fp32 AdamW vs plain copies of the
//! bytes each touches (the bandwidth floor, copied on every core), in one run. Criterion
//! reports GB/s of the bytes each step must move (fp32 AdamW: p, g, m, v read and p, m, v
//! written, 28 B/param; 8-bit: p, g and two codes read, p and two codes written, 16 B/param
//! plus 16 B per 256-block); parameters/s is 16,777,216 / time. Then the signed map's
//! quantizer alone, three ways (single thread).

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use rewind::Tensor;
use rewind::optim::quant::QuantMap;
use rewind::optim::{AdamW, AdamW8bit, Optimizer, ParamGroup};

#[path = "alloc.rs"]
mod alloc;

const N: usize = 1 << 24;

fn setup() -> (Tensor, Vec<ParamGroup>) {
    let p = Tensor::from_vec(vec![0.01f32; N], &[N])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    p.set_grad(Some(
        Tensor::from_vec(
            (0..N)
                .map(|i| ((i % 1000) as f32 - 500.0) * 1e-4)
                .collect::<Vec<f32>>(),
            &[N],
        )
        .unwrap(),
    ));
    (p.clone(), vec![ParamGroup::new(vec![p], 1e-3, 0.01)])
}

/// A copy on every core (the optimizers run on every core too), in 256 KiB pieces.
fn par_copy<T: Copy + Send + Sync>(dst: &mut [T], src: &[T]) {
    use rayon::prelude::*;
    let piece = (256 << 10) / std::mem::size_of::<T>();
    dst.par_chunks_mut(piece)
        .zip(src.par_chunks(piece))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

fn optimizers(c: &mut Criterion) {
    alloc::keep_freed_memory();
    let mut g = c.benchmark_group("optimizer_step_16M");
    g.sample_size(10);
    let (_p, groups) = setup();
    let mut fp32 = AdamW::new(groups.clone());
    g.throughput(Throughput::Bytes(28 * N as u64));
    g.bench_function("adamw_fp32", |b| b.iter(|| fp32.step().unwrap()));
    let mut q8 = AdamW8bit::new(groups);
    g.throughput(Throughput::Bytes(16 * N as u64 + 16 * (N / 256) as u64));
    g.bench_function("adamw_8bit", |b| b.iter(|| q8.step().unwrap()));
    g.throughput(Throughput::Bytes(28 * N as u64));
    // The same bytes an fp32 AdamW step touches (p, g, m, v read; p, m, v written) as copies.
    let src = vec![1.0f32; 4 * N];
    let mut dst = vec![0.0f32; 3 * N];
    g.bench_function("copy_same_bytes_as_fp32_adamw", |b| {
        b.iter(|| {
            par_copy(&mut dst, &src[..3 * N]);
            black_box(&src[3 * N..]);
            black_box(&mut dst);
        })
    });
    // The bytes an 8-bit step touches (p, g and two code arrays read; p and the codes written).
    g.throughput(Throughput::Bytes(16 * N as u64));
    let (src_w, mut dst_w) = (vec![1.0f32; 2 * N], vec![0.0f32; N]);
    let (src_q, mut dst_q) = (vec![1u8; 2 * N], vec![0u8; 2 * N]);
    g.bench_function("copy_same_bytes_as_8bit_adamw", |b| {
        b.iter(|| {
            par_copy(&mut dst_w, &src_w[..N]);
            par_copy(&mut dst_q, &src_q);
            black_box(&src_w[N..]);
            black_box((&mut dst_w, &mut dst_q));
        })
    });
    g.finish();
}

/// Quantizing 16M values (m/absmax-like: normal, scaled into [−1, 1]) three ways with the same
/// result: the lookup-free vector path, the step table (one lookup per value), the search.
fn quantizers(c: &mut Criterion) {
    let mut g = c.benchmark_group("quantize_16M_signed");
    g.sample_size(10);
    rewind::rng::manual_seed(5);
    let xs: Vec<f32> = rewind::rng::normal_vec(N)
        .iter()
        .map(|&x| (x / 4.0).clamp(-1.0, 1.0) as f32)
        .collect();
    let map = QuantMap::signed();
    let mut codes = vec![0u8; N];
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("lookup_free", |b| {
        b.iter(|| map.quantize_slice(black_box(&xs), &mut codes).unwrap())
    });
    g.bench_function("step_table", |b| {
        b.iter(|| {
            for (q, &x) in codes.iter_mut().zip(black_box(&xs)) {
                *q = map.table().quantize(x);
            }
        })
    });
    g.bench_function("search", |b| {
        b.iter(|| {
            for (q, &x) in codes.iter_mut().zip(black_box(&xs)) {
                *q = map.table().quantize_search(x);
            }
        })
    });
    g.bench_function("dequantize_lookup_free", |b| {
        let mut out = vec![0f32; N];
        b.iter(|| map.dequantize_slice(black_box(&codes), &mut out).unwrap())
    });
    g.finish();
}

criterion_group!(benches, optimizers, quantizers);
criterion_main!(benches);
