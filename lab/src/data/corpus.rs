//! A seeded synthetic corpus: short programs of key–value and arithmetic statements
//! ("let k3 = 17 ; k3 plus 4 is 21 ."), whose number of statements follows a Pareto tail, so
//! most samples are short and a few are long — the shape that makes padding strategy matter.

use super::DataRng;

/// Corpus size and shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorpusConfig {
    /// Number of samples.
    pub samples: usize,
    /// Seed of the generator.
    pub seed: u64,
    /// Most statements in one sample.
    pub max_statements: usize,
    /// Tail index of the statement count (smaller: heavier tail).
    pub alpha: f64,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        CorpusConfig {
            samples: 2000,
            seed: 0,
            max_statements: 48,
            alpha: 1.1,
        }
    }
}

const KEYS: [&str; 8] = ["k", "x", "y", "val", "cnt", "idx", "acc", "tmp"];
/// An operator's word and what it computes.
type Op = (&'static str, fn(i64, i64) -> i64);

const OPS: [Op; 3] = [
    ("plus", |a, b| a + b),
    ("minus", |a, b| a - b),
    ("times", |a, b| a * b),
];

fn statement(r: &mut DataRng) -> String {
    let key = format!("{}{}", KEYS[r.below(KEYS.len())], r.below(10));
    let (a, b) = (r.below(100) as i64, r.below(20) as i64);
    let (name, f) = OPS[r.below(OPS.len())];
    match r.below(3) {
        0 => format!("let {key} = {a} ;"),
        1 => format!("let {key} = {a} ; {key} {name} {b} is {} .", f(a, b)),
        _ => format!("{a} {name} {b} is {} .", f(a, b)),
    }
}

/// The corpus: `cfg.samples` texts, the same for the same seed.
pub fn synthetic_corpus(cfg: CorpusConfig) -> Vec<String> {
    let mut r = DataRng::new(cfg.seed);
    (0..cfg.samples)
        .map(|_| {
            // Pareto: P(n > t) = t^(−α), n ≥ 1.
            let u = 1.0 - r.uniform();
            let n = (u.powf(-1.0 / cfg.alpha).floor() as usize).clamp(1, cfg.max_statements.max(1));
            (0..n)
                .map(|_| statement(&mut r))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}
