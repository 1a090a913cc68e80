//! safetensors save/load: exact round trip by name; truncated, corrupt or mismatched files
//! are typed errors.

#[path = "../../tests/common/mod.rs"]
mod common;

use rewind::nn::Parameters;
use rewind::weights::{from_bytes, to_bytes};
use rewind_lab::models::{Transformer, TransformerConfig};

fn model(seed: u64, lora_rank: usize) -> Transformer {
    rewind::rng::manual_seed(seed);
    Transformer::new(TransformerConfig {
        vocab: 260,
        max_len: 16,
        d: 16,
        heads: 2,
        layers: 2,
        lora_rank,
    })
    .unwrap()
}

fn bits(m: &Transformer) -> Vec<Vec<u32>> {
    m.parameters().iter().map(common::bits).collect()
}

#[test]
fn weights_round_trip_exactly_by_name() {
    let (a, b) = (model(1, 4), model(2, 4));
    assert_ne!(bits(&a), bits(&b));
    let bytes = to_bytes(&a.named_parameters()).unwrap();
    from_bytes(&bytes, &b.named_parameters()).unwrap();
    assert_eq!(bits(&a), bits(&b));
    assert!(
        a.named_parameters()
            .iter()
            .any(|(n, _)| n == "model.layers.0.attn.q_proj.lora_A")
    );
}

#[test]
fn truncated_corrupt_or_mismatched_files_are_errors() {
    let a = model(1, 0);
    let bytes = to_bytes(&a.named_parameters()).unwrap();
    for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let e = from_bytes(&bytes[..cut], &a.named_parameters()).unwrap_err();
        assert!(
            e.to_string().contains("corrupt or truncated"),
            "cut at {cut}: {e}"
        );
    }
    let mut garbled = bytes.clone();
    garbled[10] ^= 0xFF;
    assert!(from_bytes(&garbled, &a.named_parameters()).is_err());
    let other = model(1, 4); // different parameter set
    assert!(
        from_bytes(&bytes, &other.named_parameters())
            .unwrap_err()
            .to_string()
            .contains("no tensor named")
    );
    let wider = Transformer::new(TransformerConfig {
        vocab: 260,
        max_len: 16,
        d: 32,
        heads: 2,
        layers: 2,
        lora_rank: 0,
    })
    .unwrap();
    assert!(
        from_bytes(&bytes, &wider.named_parameters())
            .unwrap_err()
            .to_string()
            .contains("in the file but")
    );
}
