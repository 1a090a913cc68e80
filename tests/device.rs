//! Devices without a GPU: every tensor lives on the CPU, moving it there is the identity, and
//! (feature `cuda`) asking for a CUDA device where there is none is a typed error, not a panic.
//! The CUDA backend itself is tested against the CPU in `tests/cuda_gpu.rs` (needs a device).

use rewind::{Device, Error, Tensor};

#[test]
fn tensors_live_on_the_cpu_and_moving_them_there_is_the_same_tensor() {
    let x = Tensor::from_vec(vec![1.0f32, -2.5, 3.25], &[3])
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    assert_eq!(x.device(), Device::Cpu);
    assert_eq!(x.device().to_string(), "cpu");
    let y = x.to_device(&Device::Cpu).unwrap();
    assert!(
        y.is_leaf(),
        "no op is recorded for a move to where it already is"
    );
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0, -2.5, 3.25]);
    // Ops on it stay on the CPU.
    let z = y.mul_scalar(2.0).unwrap().sum().unwrap();
    assert_eq!(z.device(), Device::Cpu);
    z.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), vec![2.0; 3]);
}

#[test]
fn device_errors_say_which_devices_and_what_to_do() {
    let mismatch = Error::DeviceMismatch {
        op: "matmul",
        lhs: "cuda:0".into(),
        rhs: "cpu".into(),
    };
    assert_eq!(
        mismatch.to_string(),
        "matmul: operands on cuda:0 and cpu; move one with to_device first"
    );
    let missing = Error::Unsupported {
        op: "softmax",
        device: "cuda:0".into(),
    };
    assert_eq!(
        missing.to_string(),
        "softmax: no cuda:0 kernel; move the tensors to the cpu with to_device first"
    );
}

#[cfg(feature = "cuda")]
#[test]
fn asking_for_a_cuda_device_gives_one_or_a_typed_error() {
    match Device::cuda(0) {
        // A machine with a GPU: tensors move there and back bit for bit.
        Ok(dev) => {
            let x = Tensor::from_vec(vec![1.5f32, -0.0, 7.0], &[3]).unwrap();
            let back = x.to_device(&dev).unwrap().to_device(&Device::Cpu).unwrap();
            assert_eq!(back.to_vec::<f32>().unwrap(), vec![1.5, -0.0, 7.0]);
        }
        Err(e) => assert!(matches!(e, Error::Cuda { .. }), "{e:?}"),
    }
}
