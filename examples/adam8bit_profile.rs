//! Profiling aid: 8-bit vs fp32 AdamW steps on 16M parameters (min and median of 20 steps).
use rewind::Tensor;
use rewind::optim::{AdamW, AdamW8bit, Optimizer, ParamGroup};

fn time(opt: &mut dyn Optimizer) -> rewind::Result<(f64, f64)> {
    opt.step()?;
    let mut t: Vec<f64> = (0..20)
        .map(|_| {
            let s = std::time::Instant::now();
            opt.step().map(|_| s.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<rewind::Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok((t[0], t[10]))
}

fn main() -> rewind::Result<()> {
    const N: usize = 1 << 24;
    let p = Tensor::from_vec(vec![0.01f32; N], &[N])?.requires_grad_(true)?;
    p.set_grad(Some(Tensor::from_vec(
        (0..N)
            .map(|i| ((i % 1000) as f32 - 500.0) * 1e-4)
            .collect::<Vec<f32>>(),
        &[N],
    )?));
    let group = || vec![ParamGroup::new(vec![p.clone()], 1e-3, 0.01)];
    let (min, med) = time(&mut AdamW8bit::new(group()))?;
    println!("8-bit AdamW: min {min:.1} ms, median {med:.1} ms per step");
    let (min, med) = time(&mut AdamW::new(group()))?;
    println!("fp32 AdamW:  min {min:.1} ms, median {med:.1} ms per step");
    Ok(())
}
