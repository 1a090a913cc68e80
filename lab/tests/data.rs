//! The data pipeline: a deterministic long-tailed corpus and collators whose
//! padding shrinks from fixed to dynamic to grouped while every sample is seen once.

use rewind_lab::data::collate::padded_fraction;
use rewind_lab::data::{CorpusConfig, PAD, Padding, Tokenizer, batches, synthetic_corpus};

fn corpus() -> Vec<String> {
    synthetic_corpus(CorpusConfig {
        samples: 600,
        ..CorpusConfig::default()
    })
}

#[test]
fn corpus_is_deterministic_and_long_tailed() {
    let a = corpus();
    assert_eq!(a, corpus(), "same seed, same corpus");
    assert_ne!(
        a,
        synthetic_corpus(CorpusConfig {
            samples: 600,
            seed: 1,
            ..CorpusConfig::default()
        })
    );
    let mut lens: Vec<usize> = a.iter().map(|s| s.len()).collect();
    lens.sort();
    let (median, max) = (lens[lens.len() / 2], lens[lens.len() - 1]);
    assert!(
        max > 10 * median,
        "a long tail: median {median} chars, max {max}"
    );
}

#[test]
fn collators_label_next_tokens_and_mask_padding() {
    let samples = vec![vec![5, 6, 7], vec![8], vec![9, 10, 11, 12, 13]];
    let b = &batches(&samples, 3, Padding::Dynamic, 0).unwrap()[0];
    assert_eq!(b.ids.shape(), &[3, 5]);
    let t = 5;
    let mask = b.key_pad_mask.to_vec_f32();
    for (r, &i) in b.sample_ids.iter().enumerate() {
        let s = &samples[i];
        for p in 0..t {
            let (id, label) = (b.ids.data()[r * t + p], b.labels.data()[r * t + p]);
            if p < s.len() {
                assert_eq!(id, s[p] as i64);
                assert_eq!(mask[r * t + p], 0.0);
                assert_eq!(
                    label,
                    if p + 1 < s.len() {
                        s[p + 1] as i64
                    } else {
                        -100
                    }
                );
            } else {
                assert_eq!(
                    (id, label, mask[r * t + p]),
                    (PAD as i64, -100, 1.0),
                    "padding is ignored and masked"
                );
            }
        }
    }
    let fixed = &batches(&samples, 3, Padding::Fixed(4), 0).unwrap()[0];
    assert_eq!(
        fixed.ids.shape(),
        &[3, 4],
        "fixed padding truncates to its length"
    );
}

#[test]
fn grouping_pads_less_than_dynamic_which_pads_less_than_fixed() {
    let texts = corpus();
    let tok = Tokenizer::train(&texts, 512).unwrap();
    let samples: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
    let longest = samples.iter().map(Vec::len).max().unwrap();
    let frac = |p| {
        let bs = batches(&samples, 16, p, 7).unwrap();
        let mut seen: Vec<usize> = bs.iter().flat_map(|b| b.sample_ids.clone()).collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..samples.len()).collect::<Vec<_>>(),
            "{p:?}: every sample exactly once"
        );
        padded_fraction(&bs)
    };
    let (fixed, dynamic, grouped) = (
        frac(Padding::Fixed(longest)),
        frac(Padding::Dynamic),
        frac(Padding::Grouped { chunk_batches: 8 }),
    );
    assert!(
        fixed > dynamic && dynamic > grouped,
        "padded fractions: fixed {fixed:.3}, dynamic {dynamic:.3}, grouped {grouped:.3}"
    );
    // Measured here: fixed 0.928, dynamic 0.828, grouped 0.517 of the slots are padding.
    assert!(
        1.0 - grouped > 2.0 * (1.0 - dynamic),
        "grouping at least doubles the share of real tokens"
    );
}
