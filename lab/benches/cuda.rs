//! GPU benches (feature `cuda`): our hgemm vs cuBLAS `gemm_ex` (f16 in, f32 compute and out)
//! at 4096³; 8-bit AdamW and the fused unscale vs a device-to-device copy on 64M elements.
//! Every timed iteration synchronises the stream. Without a CUDA device it says so and
//! measures nothing.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rewind::cuda::Gpu;
use rewind::cuda::adam8bit::DeviceAdam8bit;
use rewind::cuda::hgemm::{Layout, hgemm_f32};
use rewind::cuda::loss_scale::{DeviceScaler, unscale};
use rewind_lab::bench::cuda::{blas, cublas_gemm, random_f16};

fn cuda(c: &mut Criterion) {
    let gpu = match Gpu::new(0).and_then(|g| blas(&g).map(|h| (g, h))) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            return;
        }
    };
    let (gpu, h) = gpu;
    let st = gpu.stream.clone();
    let n = 4096;
    let a = st.clone_htod(&random_f16(n * n, 1)).unwrap();
    let b = st.clone_htod(&random_f16(n * n, 2)).unwrap();
    let mut out = st.alloc_zeros::<f32>(n * n).unwrap();
    let mut g = c.benchmark_group("hgemm_4096");
    g.sample_size(20);
    g.throughput(Throughput::Elements((2 * n * n * n) as u64));
    g.bench_function("ours", |bch| {
        bch.iter(|| {
            hgemm_f32(&gpu, &a, &b, &mut out, n, n, n, Layout::Nn).unwrap();
            gpu.sync().unwrap()
        })
    });
    g.bench_function("cublas_gemm_ex", |bch| {
        bch.iter(|| {
            cublas_gemm(&gpu, &h, &a, &b, &mut out, n, n, n).unwrap();
            gpu.sync().unwrap()
        })
    });
    g.finish();
    drop((a, b, out));

    let len = 1 << 26;
    let mut g = c.benchmark_group("bandwidth_64M");
    g.sample_size(20);
    let src = st.alloc_zeros::<f32>(len).unwrap();
    let mut dst = st.alloc_zeros::<f32>(len).unwrap();
    g.throughput(Throughput::Bytes(8 * len as u64));
    g.bench_function("copy_dtod", |bch| {
        bch.iter(|| {
            st.memcpy_dtod(&src, &mut dst).unwrap();
            gpu.sync().unwrap()
        })
    });
    drop((src, dst));
    let p = vec![0.01f32; len];
    let grad: Vec<f32> = (0..len)
        .map(|i| ((i % 1000) as f32 - 500.0) * 1e-4)
        .collect();
    let mut opt = DeviceAdam8bit::new(&gpu, &p, &grad).unwrap();
    g.throughput(Throughput::Bytes(16 * len as u64));
    g.bench_function("adam8bit_step", |bch| {
        bch.iter(|| {
            opt.step(&gpu, 0.9, 0.999, 1e-8, 0.01, 31.6, 1.0).unwrap();
            gpu.sync().unwrap()
        })
    });
    drop(opt);
    let mut grads = [st.clone_htod(&grad).unwrap()];
    let mut s = DeviceScaler {
        scale: st.clone_htod(&[1.0f32]).unwrap(),
        inv_scale: st.alloc_zeros::<f32>(1).unwrap(),
        growth_tracker: st.clone_htod(&[0i32]).unwrap(),
        found_inf: st.alloc_zeros::<i32>(1).unwrap(),
    };
    g.throughput(Throughput::Bytes(8 * len as u64));
    g.bench_function("unscale_found_inf", |bch| {
        bch.iter(|| unscale(&gpu, &mut grads.iter_mut().collect::<Vec<_>>(), &mut s, 1.0).unwrap())
    });
    g.finish();
}

criterion_group!(benches, cuda);
criterion_main!(benches);
