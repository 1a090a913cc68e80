//! The nn layers: shapes, parameter names, hooks, train/eval.

use approx::assert_relative_eq;
use rewind::nn::{Dropout, Embedding, LayerNorm, Linear, Module, Parameters, prefixed};
use rewind::{DType, Indices, Tensor};

#[test]
fn linear_computes_x_wt_plus_b() {
    let l = Linear::new(2, 3, true).unwrap();
    l.weight
        .set_data(vec![1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0])
        .unwrap();
    l.bias
        .as_ref()
        .unwrap()
        .set_data(vec![0.5f32, -0.5, 0.0])
        .unwrap();
    let x = Tensor::from_vec(vec![2.0f32, 3.0], &[1, 2]).unwrap();
    // [2,3]·[[1,0],[0,1],[1,1]]ᵀ + [0.5,−0.5,0] = [2.5, 2.5, 5]
    assert_eq!(l.forward(&x).unwrap().to_vec_f32(), vec![2.5, 2.5, 5.0]);
}

#[test]
fn linear_init_follows_pytorch_bounds() {
    rewind::rng::manual_seed(1);
    let l = Linear::new(64, 32, true).unwrap();
    let bound = 1.0 / 8.0;
    assert!(l.weight.to_vec_f32().iter().all(|w| w.abs() <= bound));
    assert!(l.weight.requires_grad() && l.weight.is_leaf());
}

#[test]
fn parameters_are_collected_by_dotted_name() {
    let fc = Linear::new(4, 4, true).unwrap();
    let ln = LayerNorm::new(4).unwrap();
    let mut names: Vec<String> = prefixed("blocks.0.fc1", fc.named_parameters())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.extend(
        prefixed("blocks.0.ln", ln.named_parameters())
            .into_iter()
            .map(|(n, _)| n),
    );
    assert_eq!(
        names,
        [
            "blocks.0.fc1.weight",
            "blocks.0.fc1.bias",
            "blocks.0.ln.weight",
            "blocks.0.ln.bias"
        ]
    );
}

#[test]
fn forward_hook_sees_and_can_mark_the_output() {
    // HF's enable_input_require_grads: the frozen embedding's output becomes a grad-requiring leaf.
    let emb = Embedding::new(10, 4).unwrap();
    emb.weight.requires_grad_(false).unwrap();
    let ids = Indices::new(vec![1, 2, 3], &[3]).unwrap();
    assert!(!emb.forward(&ids).unwrap().requires_grad());
    let handle = emb.enable_input_require_grads();
    let out = emb.forward(&ids).unwrap();
    assert!(out.requires_grad() && out.is_leaf());
    assert!(emb.hooks.remove(handle));
    assert!(!emb.forward(&ids).unwrap().requires_grad());
}

#[test]
fn layer_norm_output_has_zero_mean_unit_variance() {
    let ln = LayerNorm::new(4).unwrap();
    let y = ln
        .forward(&Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 6.0], &[1, 4]).unwrap())
        .unwrap()
        .to_vec_f64();
    let mean = y.iter().sum::<f64>() / 4.0;
    let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
    assert_relative_eq!(mean, 0.0, epsilon = 1e-6);
    assert_relative_eq!(var, 1.0, epsilon = 1e-4);
}

#[test]
fn dropout_is_identity_in_eval() {
    let d = Dropout::new(0.5);
    let x = Tensor::ones(&[100], DType::F32).unwrap();
    d.train(false);
    assert_eq!(d.forward(&x).unwrap().to_vec_f32(), vec![1.0; 100]);
    d.train(true);
    assert!(d.forward(&x).unwrap().to_vec_f32().contains(&0.0));
}

#[test]
fn decoding_with_a_kv_cache_gives_the_attention_of_the_whole_sequence() {
    use rewind::nn::attention::{KvCache, causal_attention};
    // 4 query heads over 2 KV heads, 7 positions fed as 3, 1, 1, 2 (a prompt, then tokens).
    rewind::rng::manual_seed(5);
    let r = |s: &[usize]| Tensor::randn(s).unwrap().to_dtype(DType::F64).unwrap();
    let (q, k, v) = (r(&[1, 4, 7, 8]), r(&[1, 2, 7, 8]), r(&[1, 2, 7, 8]));
    let whole = causal_attention(&q, &k, &v, None).unwrap(); // [1, 7, 32]
    let mut cache = KvCache::new();
    let mut parts = Vec::new();
    let mut at = 0;
    for n in [3, 1, 1, 2] {
        let part = |t: &Tensor| t.narrow(2, at, n).unwrap();
        parts.push(cache.attend(&part(&q), &part(&k), &part(&v)).unwrap());
        at += n;
        assert_eq!(cache.len(), at);
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    let stepped = Tensor::cat(&refs, 1).unwrap();
    for (a, b) in stepped.to_vec_f64().iter().zip(whole.to_vec_f64()) {
        assert_relative_eq!(*a, b, epsilon = 1e-12);
    }
}

#[test]
fn layers_built_under_skip_init_are_zeros_and_leave_the_generator_alone() {
    // transformers' no_init_weights: a model whose weights are loaded next draws nothing.
    rewind::rng::manual_seed(7);
    let before = rewind::rng::get_state();
    let (lin, emb) = {
        let _skip = rewind::nn::SkipInit::new();
        (
            Linear::new(8, 4, true).unwrap(),
            Embedding::new(10, 3).unwrap(),
        )
    };
    assert_eq!(rewind::rng::get_state().offset, before.offset);
    for (name, p) in lin.named_parameters().into_iter().chain(emb_params(&emb)) {
        assert!(p.to_vec_f32().iter().all(|&v| v == 0.0), "{name}");
        assert!(p.requires_grad(), "{name} is a parameter");
    }
    // The guard dropped, layers draw again.
    let drawn = Linear::new(8, 4, false).unwrap();
    assert!(drawn.weight.to_vec_f32().iter().any(|&v| v != 0.0));
    assert!(rewind::rng::get_state().offset > before.offset);
}

fn emb_params(e: &Embedding) -> Vec<(String, Tensor)> {
    vec![("embedding".to_string(), e.weight.clone())]
}
