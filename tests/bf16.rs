//! bf16 as a storage type: PyTorch's roundings bit for bit (`.to(torch.bfloat16)`:
//! `scripts/autocast_bf16_fixture.py` → `fixtures/bf16_casts.json`), creation, arithmetic
//! accumulating in f32, safetensors BF16 read and written without conversion, and the
//! optimizers' f32 master weights.

use half::bf16;
use rewind::optim::{AdamW, Optimizer, ParamGroup};
use rewind::{DType, Tensor};
use serde_json::Value;

mod common;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bf16_casts.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    common::json_numbers(v)
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

fn bits(t: &Tensor) -> Vec<u16> {
    t.to_vec_f32()
        .iter()
        .map(|&x| bf16::from_f32(x).to_bits())
        .collect()
}

#[test]
fn f32_to_bf16_rounds_as_pytorch_does_bit_for_bit() {
    // Round to nearest even (1 + 2⁻⁸ → 1, 1 + 3·2⁻⁸ → 1 + 2⁻⁶), overflow past bf16's largest
    // to infinity, subnormals kept, NaN stays NaN.
    let fix = fixture();
    let x: Vec<f32> = u32s(&fix["f32_bits"])
        .into_iter()
        .map(f32::from_bits)
        .collect();
    let want = u32s(&fix["bf16_bits"]);
    let y = Tensor::from_vec(x.clone(), &[x.len()])
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    for (i, (got, want)) in bits(&y).iter().zip(&want).enumerate() {
        if x[i].is_nan() {
            assert!(bf16::from_bits(*got).is_nan(), "NaN at {i}");
        } else {
            assert_eq!(
                u32::from(*got),
                *want,
                "{} → {got:#06x}, PyTorch {want:#06x}",
                x[i]
            );
        }
    }
    // bf16 → f32 is exact, so the round trip returns the bf16 values.
    let back = y
        .to_dtype(DType::F32)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    assert_eq!(bits(&back), bits(&y));
}

#[test]
fn bf16_tensors_are_made_and_computed_in_bf16_accumulating_in_f32() {
    let ones = Tensor::full(&[4096], 1.0, DType::BF16).unwrap();
    assert_eq!(ones.dtype(), DType::BF16);
    assert_eq!(
        Tensor::zeros(&[3], DType::BF16).unwrap().to_vec_f32(),
        [0.0; 3]
    );
    // 4096 ones: a bf16 accumulator would stop at 256 (256 + 1 rounds back to 256); f32
    // accumulation, as PyTorch's CPU kernels, gives 4096 exactly.
    let s = ones.sum().unwrap();
    assert_eq!((s.dtype(), s.to_vec_f32()[0]), (DType::BF16, 4096.0));
    // Products too: a 1×4096 by 4096×1 product of ones.
    let p = ones
        .reshape(&[1, 4096])
        .unwrap()
        .matmul(&ones.reshape(&[4096, 1]).unwrap())
        .unwrap();
    assert_eq!((p.dtype(), p.to_vec_f32()[0]), (DType::BF16, 4096.0));
    // Mixing dtypes outside autocast is PyTorch's error, not a silent cast.
    let f = Tensor::full(&[4096], 1.0, DType::F32).unwrap();
    assert!(ones.add(&f).is_err());
}

#[test]
fn optimizers_keep_f32_master_weights_and_refuse_bf16_parameters() {
    let w = Tensor::full(&[4], 1.0, DType::BF16)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    w.sum().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().dtype(), DType::BF16);
    let mut opt = AdamW::new(vec![ParamGroup::new(vec![w.clone()], 1e-3, 0.0)]);
    let e = opt.step().unwrap_err().to_string();
    assert!(e.contains("(fp32 master weights), got BF16"), "{e}");
}

#[cfg(feature = "safetensors")]
#[test]
fn safetensors_bf16_loads_and_saves_without_conversion() {
    use rewind::weights;
    // PyTorch's safetensors file of the cast values, shape [4, 16].
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bf16_casts.safetensors"
    );
    let file = std::fs::read(path).unwrap();
    let p = Tensor::zeros(&[4, 16], DType::BF16).unwrap();
    let params = vec![("x".to_string(), p.clone())];
    weights::from_bytes(&file, &params).unwrap();
    let want: Vec<u16> = u32s(&fixture()["bf16_bits"])
        .into_iter()
        .map(|b| b as u16)
        .collect();
    let got = bits(&p);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let nan = bf16::from_bits(*w).is_nan();
        assert!(g == w || nan && bf16::from_bits(*g).is_nan(), "element {i}");
    }
    // Written back: dtype BF16 and PyTorch's bytes, element for element.
    let out = weights::to_bytes(&params).unwrap();
    let (st, orig) = (
        weights::parse(&out).unwrap(),
        weights::parse(&file).unwrap(),
    );
    let (a, b) = (st.tensor("x").unwrap(), orig.tensor("x").unwrap());
    assert_eq!(
        (a.dtype(), a.shape()),
        (weights::Dtype::BF16, &[4usize, 16][..])
    );
    assert_eq!(a.data(), b.data());
    // An f32 parameter does not silently take bf16 data.
    let f = vec![(
        "x".to_string(),
        Tensor::zeros(&[4, 16], DType::F32).unwrap(),
    )];
    assert!(weights::from_bytes(&file, &f).is_err());
}

#[test]
fn the_vectorised_conversions_give_halfs_bits_for_every_bf16_and_a_sweep_of_f32s() {
    use rewind::dtype::{bf16_to_f32, f32_to_bf16};
    // Widening is PyTorch's shift by 16 (half also quiets a signalling NaN: both stay NaN).
    for b in 0..=u16::MAX {
        let x = bf16::from_bits(b);
        assert_eq!(bf16_to_f32(x).to_bits(), u32::from(b) << 16, "{b:#06x}");
        if !x.is_nan() {
            assert_eq!(bf16_to_f32(x).to_bits(), x.to_f32().to_bits(), "{b:#06x}");
        }
    }
    // Every 4099th bit pattern (all exponents, mantissas, signs; NaNs among them) and the
    // patterns around each rounding tie.
    let ties = (0..=u16::MAX).flat_map(|h| {
        let t = (u32::from(h) << 16) | 0x8000;
        [t - 1, t, t + 1]
    });
    for bits in (0..=u32::MAX).step_by(4099).chain(ties) {
        let x = f32::from_bits(bits);
        let (got, want) = (f32_to_bf16(x), bf16::from_f32(x));
        if x.is_nan() {
            assert!(got.is_nan(), "{bits:#010x}");
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{bits:#010x}");
        }
    }
}
