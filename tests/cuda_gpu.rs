//! GPU tests: every kernel against its CPU reference on random data with odd sizes. They need a
//! CUDA device, so they are `#[ignore]`d (reported as ignored, never as passed) and run by
//! `scripts/gpu-check.sh` with `--include-ignored`; without a device they fail saying so.
#![cfg(feature = "cuda")]

use half::f16;
use rewind::cuda::Gpu;
use rewind::cuda::hgemm::{Layout, hgemm_host};

fn gpu() -> Gpu {
    Gpu::new(0).unwrap_or_else(|e| panic!("skipped: no CUDA device ({e})"))
}

fn rand(n: usize, seed: u64) -> Vec<f32> {
    rewind::rng::manual_seed(seed);
    rewind::rng::uniform_vec(n)
        .into_iter()
        .map(|u| (2.0 * u - 1.0) as f32)
        .collect()
}

#[test]
#[ignore = "needs a CUDA device: run scripts/gpu-check.sh"]
fn hgemm_matches_the_f32_cpu_matmul_on_odd_sizes() {
    let g = gpu();
    for (m, n, k) in [
        (1, 1, 1),
        (17, 33, 65),
        (128, 128, 32),
        (300, 129, 77),
        (1000, 513, 256),
    ] {
        let (a, b) = (rand(m * k, 1), rand(k * n, 2));
        let (ah, bh): (Vec<f16>, Vec<f16>) = (
            a.iter().map(|&x| f16::from_f32(x)).collect(),
            b.iter().map(|&x| f16::from_f32(x)).collect(),
        );
        // CPU reference on the same f16-rounded inputs, f32 accumulation.
        let ta =
            rewind::Tensor::from_vec(ah.iter().map(|x| x.to_f32()).collect::<Vec<f32>>(), &[m, k])
                .unwrap();
        let tb =
            rewind::Tensor::from_vec(bh.iter().map(|x| x.to_f32()).collect::<Vec<f32>>(), &[k, n])
                .unwrap();
        let want = ta.matmul(&tb).unwrap().to_vec_f32();
        let got = hgemm_host(&g, &ah, &bh, m, n, k, Layout::Nn).unwrap();
        for (i, (x, y)) in got.iter().zip(&want).enumerate() {
            assert!(
                (x - y).abs() <= 1e-3 * (k as f32).sqrt() + 1e-3 * y.abs(),
                "{m}×{n}×{k} at {i}: gpu {x} cpu {y}"
            );
        }
        // The transposed layouts backward uses: B stored [N,K], A stored [K,M].
        let bt: Vec<f16> = (0..n * k).map(|i| bh[(i % k) * n + i / k]).collect();
        let got_nt = hgemm_host(&g, &ah, &bt, m, n, k, Layout::Nt).unwrap();
        let at: Vec<f16> = (0..k * m).map(|i| ah[(i % m) * k + i / m]).collect();
        let got_tn = hgemm_host(&g, &at, &bh, m, n, k, Layout::Tn).unwrap();
        assert_eq!(got_nt, got, "{m}×{n}×{k} Nt");
        assert_eq!(got_tn, got, "{m}×{n}×{k} Tn");
    }
}

#[test]
#[ignore = "needs a CUDA device: run scripts/gpu-check.sh"]
fn adam8bit_kernel_matches_the_cpu_reference_bit_for_bit() {
    use rewind::optim::{Adam8bitState, AdamW8bit, Optimizer, ParamGroup};
    let g = gpu();
    let n = 10_000 + 77;
    let (p0, grads) = (
        rand(n, 3),
        rand(n, 4)
            .into_iter()
            .map(|x| x * 0.01)
            .collect::<Vec<f32>>(),
    );
    let p = rewind::Tensor::from_vec(p0.clone(), &[n])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let mut cpu = AdamW8bit::new(vec![ParamGroup::new(vec![p.clone()], 1e-3, 0.01)]);
    let mut dev = rewind::cuda::adam8bit::DeviceAdam8bit::new(&g, &p0, &grads).unwrap();
    for t in 1..=3u64 {
        p.set_grad(Some(rewind::Tensor::from_vec(grads.clone(), &[n]).unwrap()));
        cpu.step().unwrap();
        let c1 = (1e-3 / (1.0 - 0.9f64.powi(t as i32))) as f32;
        let c2 = (1.0 / (1.0 - 0.999f64.powi(t as i32)).sqrt()) as f32;
        dev.step(&g, 0.9, 0.999, 1e-8, c1, c2, (1.0 - 1e-3 * 0.01) as f32)
            .unwrap();
    }
    let st = &g.stream;
    let Some(Adam8bitState::Blockwise {
        m,
        v,
        absmax_m,
        absmax_v,
    }) = cpu.state(0)
    else {
        panic!("blockwise")
    };
    assert_eq!(&st.clone_dtoh(&dev.qm).unwrap(), m);
    assert_eq!(&st.clone_dtoh(&dev.qv).unwrap(), v);
    assert_eq!(&st.clone_dtoh(&dev.absmax_m).unwrap(), absmax_m);
    assert_eq!(&st.clone_dtoh(&dev.absmax_v).unwrap(), absmax_v);
    assert_eq!(st.clone_dtoh(&dev.p).unwrap(), p.to_vec_f32());
}

#[test]
#[ignore = "needs a CUDA device: run scripts/gpu-check.sh"]
fn loss_scale_kernels_match_the_cpu_scaler() {
    use rewind::cuda::loss_scale::{DeviceScaler, unscale, update};
    let g = gpu();
    let st = &g.stream;
    let host: Vec<Vec<f32>> = vec![rand(1000, 5), rand(3, 6), rand(70_000, 7)];
    let mut grads: Vec<_> = host.iter().map(|h| st.clone_htod(h).unwrap()).collect();
    let mut s = DeviceScaler {
        scale: st.clone_htod(&[65536.0f32]).unwrap(),
        inv_scale: st.alloc_zeros::<f32>(1).unwrap(),
        growth_tracker: st.clone_htod(&[0i32]).unwrap(),
        found_inf: st.alloc_zeros::<i32>(1).unwrap(),
    };
    assert!(
        !unscale(
            &g,
            &mut grads.iter_mut().collect::<Vec<_>>(),
            &mut s,
            65536.0
        )
        .unwrap()
    );
    let inv = (1.0f64 / 65536.0) as f32;
    for (d, h) in grads.iter().zip(&host) {
        assert_eq!(
            st.clone_dtoh(d).unwrap(),
            h.iter().map(|x| x * inv).collect::<Vec<f32>>(),
            "bit-exact unscale"
        );
    }
    update(&g, &mut s, 2.0, 0.5, 2000).unwrap();
    assert_eq!(st.clone_dtoh(&s.growth_tracker).unwrap(), vec![1]);
    let mut bad = host[1].clone();
    bad[2] = f32::INFINITY;
    grads[1] = st.clone_htod(&bad).unwrap();
    assert!(
        unscale(
            &g,
            &mut grads.iter_mut().collect::<Vec<_>>(),
            &mut s,
            65536.0
        )
        .unwrap()
    );
    update(&g, &mut s, 2.0, 0.5, 2000).unwrap();
    assert_eq!(st.clone_dtoh(&s.scale).unwrap(), vec![32768.0]);
    assert_eq!(st.clone_dtoh(&s.growth_tracker).unwrap(), vec![0]);
}

fn cuda() -> rewind::Device {
    rewind::Device::cuda(0).unwrap_or_else(|e| panic!("skipped: no CUDA device ({e})"))
}

fn f16_tensor(n: &[usize], seed: u64) -> rewind::Tensor {
    let v: Vec<f16> = rand(n.iter().product(), seed)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    rewind::Tensor::from_vec(v, n).unwrap()
}

/// Within the f16 rounding of two f32 chains summing k products in different orders.
fn close_f16(got: &[f32], want: &[f32], k: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (x, y)) in got.iter().zip(want).enumerate() {
        assert!(
            (x - y).abs() <= 2f32.powi(-10) * y.abs() + 1e-3 * (k as f32).sqrt(),
            "{what} at {i}: cuda {x} cpu {y}"
        );
    }
}

#[test]
#[ignore = "needs a CUDA device: run scripts/gpu-check.sh"]
fn f16_matmul_and_linear_on_cuda_tensors_match_the_cpu_forward_and_backward() {
    use rewind::{BackwardOptions, Device};
    let dev = cuda();
    let (m, k, n) = (37, 65, 29);
    let (x, w, gy) = (
        f16_tensor(&[m, k], 11),
        f16_tensor(&[k, n], 12),
        f16_tensor(&[m, n], 13),
    );
    // The CPU: the widened GEMM (f32 accumulation, one rounding to f16).
    let (xc, wc) = (
        x.detach().requires_grad_(true).unwrap(),
        w.detach().requires_grad_(true).unwrap(),
    );
    let yc = xc.matmul(&wc).unwrap();
    yc.backward_with(Some(&gy), BackwardOptions::default())
        .unwrap();
    // The device: leaves moved there, the product and both gradients by hgemm.
    let leaf = |t: &rewind::Tensor| {
        t.to_device(&dev)
            .unwrap()
            .detach()
            .requires_grad_(true)
            .unwrap()
    };
    let (xd, wd) = (leaf(&x), leaf(&w));
    let yd = xd.matmul(&wd).unwrap();
    assert_eq!(yd.device(), dev);
    assert_eq!(yd.dtype(), rewind::DType::F16);
    yd.backward_with(
        Some(&gy.to_device(&dev).unwrap()),
        BackwardOptions::default(),
    )
    .unwrap();
    close_f16(&yd.to_vec_f32(), &yc.to_vec_f32(), k, "y");
    let (dxd, dwd) = (xd.grad().unwrap(), wd.grad().unwrap());
    assert_eq!(dxd.device(), dev, "gradients stay on the device");
    close_f16(&dxd.to_vec_f32(), &xc.grad().unwrap().to_vec_f32(), n, "dx");
    close_f16(&dwd.to_vec_f32(), &wc.grad().unwrap().to_vec_f32(), m, "dw");
    // F.linear without a bias: x·Wᵀ with W [n, k].
    let wt = f16_tensor(&[n, k], 14);
    let lin_d = xd
        .detach()
        .linear(&wt.to_device(&dev).unwrap(), None)
        .unwrap();
    let lin_c = x.linear(&wt, None).unwrap();
    close_f16(&lin_d.to_vec_f32(), &lin_c.to_vec_f32(), k, "linear");
    // Back on the CPU, the bits are the device's.
    let home = yd.to_device(&Device::Cpu).unwrap();
    assert_eq!(home.to_vec::<f16>().unwrap(), yd.to_vec::<f16>().unwrap());
}

#[test]
#[ignore = "needs a CUDA device: run scripts/gpu-check.sh"]
fn ops_without_a_cuda_kernel_and_mixed_devices_are_typed_errors() {
    use rewind::Error;
    let dev = cuda();
    let x = f16_tensor(&[4, 8], 21);
    let xd = x.to_device(&dev).unwrap();
    assert_eq!(
        xd.softmax(-1).err(),
        Some(Error::Unsupported {
            op: "softmax",
            device: "cuda:0".into()
        })
    );
    let w = f16_tensor(&[8, 3], 22);
    assert!(matches!(
        xd.matmul(&w).err(),
        Some(Error::DeviceMismatch { .. })
    ));
    // f64 has no device kernels: refused when moving.
    let wide = rewind::Tensor::from_vec(vec![1.0f64; 4], &[4]).unwrap();
    assert!(matches!(
        wide.to_device(&dev).err(),
        Some(Error::Unsupported {
            op: "to_device",
            ..
        })
    ));
}

#[test]
#[ignore = "needs a CUDA device: run scripts/gpu-check.sh"]
fn grad_scaler_unscales_cuda_gradients_in_place_like_the_cpu() {
    use rewind::amp::GradScaler;
    use rewind::optim::{ParamGroup, Sgd};
    let dev = cuda();
    let host = rand(70_000, 31);
    let p = rewind::Tensor::zeros(&[70_000], rewind::DType::F32)
        .unwrap()
        .to_device(&dev)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let grad = rewind::Tensor::from_vec(host.clone(), &[70_000]).unwrap();
    p.set_grad(Some(grad.to_device(&dev).unwrap()));
    let opt = Sgd::new(vec![ParamGroup::new(vec![p.clone()], 0.0, 0.0)], 0.0, false).unwrap();
    let mut scaler = GradScaler::default();
    scaler.unscale_(&opt).unwrap();
    let inv = (1.0f64 / 65536.0) as f32;
    let want: Vec<f32> = host.iter().map(|x| x * inv).collect();
    assert_eq!(p.grad().unwrap().device(), dev);
    assert_eq!(
        p.grad().unwrap().to_vec::<f32>().unwrap(),
        want,
        "bit-exact unscale"
    );
}

#[test]
#[ignore = "needs a CUDA device: run scripts/gpu-check.sh"]
fn adamw8bit_steps_parameters_on_the_device_bit_for_bit_like_the_cpu() {
    use rewind::optim::{AdamW8bit, Optimizer, ParamGroup};
    let dev = cuda();
    // One blockwise parameter (stepped by adam8bit.cu) and one small fp32-state one (stepped
    // on the host and written back).
    let sizes = [10_000 + 77, 300];
    let leaf = |v: Vec<f32>, n: usize, on: &rewind::Device| {
        rewind::Tensor::from_vec(v, &[n])
            .unwrap()
            .to_device(on)
            .unwrap()
            .detach()
            .requires_grad_(true)
            .unwrap()
    };
    let host = rewind::Device::Cpu;
    let cpu_params: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| leaf(rand(n, 40 + i as u64), n, &host))
        .collect();
    let dev_params: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| leaf(rand(n, 40 + i as u64), n, &dev))
        .collect();
    let mut cpu = AdamW8bit::new(vec![ParamGroup::new(cpu_params.clone(), 1e-3, 0.01)]);
    let mut gpu = AdamW8bit::new(vec![ParamGroup::new(dev_params.clone(), 1e-3, 0.01)]);
    for t in 0..3u64 {
        for (i, (&n, (pc, pd))) in sizes
            .iter()
            .zip(cpu_params.iter().zip(&dev_params))
            .enumerate()
        {
            let g: Vec<f32> = rand(n, 50 + 10 * t + i as u64)
                .iter()
                .map(|x| x * 0.01)
                .collect();
            let g = rewind::Tensor::from_vec(g, &[n]).unwrap();
            pc.set_grad(Some(g.clone()));
            pd.set_grad(Some(g.to_device(&dev).unwrap()));
        }
        cpu.step().unwrap();
        gpu.step().unwrap();
    }
    for (pc, pd) in cpu_params.iter().zip(&dev_params) {
        assert_eq!(pd.device(), dev, "the parameter stayed on the device");
        assert_eq!(
            pd.to_vec::<f32>().unwrap(),
            pc.to_vec::<f32>().unwrap(),
            "bit for bit"
        );
    }
    // The device's moments come back through state_dict, equal to the CPU's.
    assert_eq!(gpu.state_dict(), cpu.state_dict());
}
