//! `tokenizer.json` encoding throughput on a text file (one sample per paragraph), on one and
//! two threads, best of 5: the figures beside `scripts/tokenizer_speed.py`'s for the
//! `tokenizers` library. Usage: `tokenizer_speed TEXT_FILE TOKENIZER_JSON`.
use rayon::prelude::*;
use rewind_lab::data::Tokenizer;
fn main() -> rewind::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err(rewind::Error::invalid(
            "tokenizer_speed",
            "usage: tokenizer_speed TEXT_FILE TOKENIZER_JSON",
        ));
    }
    let text = std::fs::read_to_string(&args[1])
        .map_err(|e| rewind::Error::io("tokenizer_speed", &args[1], e))?;
    let texts: Vec<&str> = text
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .collect();
    let tok = Tokenizer::load(std::path::Path::new(&args[2]))?;
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| rewind::Error::invalid("tokenizer_speed", e.to_string()))?;
        let mut best = f64::INFINITY;
        let mut n = 0;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let ids: Vec<Vec<u32>> = pool.install(|| {
                texts
                    .par_iter()
                    .map(|s| tok.encode(s))
                    .collect::<rewind::Result<_>>()
            })?;
            best = best.min(t.elapsed().as_secs_f64());
            n = ids.iter().map(Vec::len).sum();
        }
        println!(
            "{threads} thread(s): {n} tokens, {:.1} ms, {:.2} M tokens/s",
            best * 1e3,
            n as f64 / best / 1e6
        );
    }
    Ok(())
}
