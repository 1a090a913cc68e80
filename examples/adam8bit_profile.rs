//! Profiling aid: 8-bit AdamW steps on 16M parameters.
use rewind::Tensor;
use rewind::optim::{AdamW8bit, Optimizer, ParamGroup};
fn main() -> rewind::Result<()> {
    const N: usize = 1 << 24;
    let p = Tensor::from_vec(vec![0.01f32; N], &[N])?.requires_grad_(true)?;
    p.set_grad(Some(Tensor::from_vec(
        (0..N)
            .map(|i| ((i % 1000) as f32 - 500.0) * 1e-4)
            .collect::<Vec<f32>>(),
        &[N],
    )?));
    let mut opt = AdamW8bit::new(vec![ParamGroup::new(vec![p], 1e-3, 0.01)]);
    let t = std::time::Instant::now();
    for _ in 0..10 {
        opt.step()?;
    }
    println!("{:.1} ms/step", t.elapsed().as_secs_f64() * 100.0);
    Ok(())
}
