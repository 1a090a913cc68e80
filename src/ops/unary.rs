//! Elementwise ops of one tensor: each states f, its derivative f', and what it saves.

use crate::autograd::{Backward, Grads};
use crate::backend::BackendStorage;
use crate::dtype::Real;
use crate::error::Result;
use crate::ops::dispatch::{self, Forward};
use crate::ops::save;
use crate::ops::spec::{Cast, OpSpec};
use crate::tensor::Tensor;
use smallvec::smallvec;

pub(crate) use crate::backend::{Saves, Unary};

pub(crate) fn apply<U: Unary>(x: &Tensor, op: U) -> Result<Tensor> {
    dispatch::apply(
        U::SPEC,
        &[x],
        |xs| {
            let x = xs[0];
            let out = x.data().unary(op)?;
            Ok(Forward::from(Tensor::activation(out, x.shape().into())))
        },
        |xs, y| UnaryBackward {
            op,
            saved: match U::SAVES {
                Saves::Nothing => None,
                Saves::Input => Some(save(xs[0])),
                Saves::Output => Some(save(y)),
            },
        },
    )
}

pub(crate) struct UnaryBackward<U: Unary> {
    op: U,
    /// Saves: the input or the output, as `U::SAVES` says; nothing for `Saves::Nothing`.
    saved: Option<Tensor>,
}

impl<U: Unary> Backward for UnaryBackward<U> {
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Grads> {
        let saved = self.saved.as_ref().map(|s| s.data());
        let gx = g.data().unary_grad(saved.as_deref(), self.op)?;
        Ok(smallvec![Some(Tensor::activation(gx, g.shape().into()))])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        if let Some(s) = &self.saved {
            f(s);
        }
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}

macro_rules! unary_op {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $torch:literal, $cast:ident, $saves:ident, |$s:ident, $x:ident| $f:expr, |$s2:ident, $dx:ident, $dy:ident| $df:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct $ty(pub f64);
        impl Unary for $ty {
            const SPEC: &'static OpSpec = &OpSpec::new($name, $torch).cast(Cast::$cast);
            const SAVES: Saves = Saves::$saves;
            #[allow(unused_variables)]
            #[inline(always)]
            fn f<T: Real>(self, $x: T) -> T {
                let $s = T::c(self.0);
                $f
            }
            #[allow(unused_variables)]
            #[inline(always)]
            fn df<T: Real>(self, $dx: T, $dy: T) -> T {
                let $s2 = T::c(self.0);
                $df
            }
        }
    };
}

unary_op!(/// y = −x; y' = −1. Saves: nothing.
    Neg, "neg", "Neg", Keep, Nothing, |_s, x| -x, |_s, _x, _y| -T::one());
unary_op!(/// y = x + s; y' = 1. Saves: nothing.
    AddScalar, "add_scalar", "Add", Keep, Nothing, |s, x| x + s, |_s, _x, _y| T::one());
unary_op!(/// y = x·s; y' = s. Saves: nothing.
    MulScalar, "mul_scalar", "Mul", Keep, Nothing, |s, x| x * s, |s, _x, _y| s);
unary_op!(/// y = eˣ; y' = y. Saves: output. Autocast runs it in f32.
    Exp, "exp", "Exp", Widen, Output, |_s, x| x.exp(), |_s, _x, y| y);
unary_op!(/// y = ln x; y' = 1/x. Saves: input. Autocast runs it in f32.
    Log, "log", "Log", Widen, Input, |_s, x| x.ln(), |_s, x, _y| x.recip());
unary_op!(/// y = tanh x; y' = 1 − y². Saves: output.
    Tanh, "tanh", "Tanh", Keep, Output, |_s, x| x.tanh_k(), |_s, _x, y| T::one() - y * y);
unary_op!(/// y = 1/(1+e⁻ˣ); y' = y(1 − y). Saves: output.
    Sigmoid, "sigmoid", "Sigmoid", Keep, Output, |_s, x| (T::one() + (-x).exp()).recip(), |_s, _x, y| y * (T::one() - y));
unary_op!(/// y = max(x, 0); y' = 1 where y > 0. Saves: output.
    Relu, "relu", "Relu", Keep, Output, |_s, x| if x > T::zero() { x } else { T::zero() }, |_s, _x, y| if y > T::zero() { T::one() } else { T::zero() });
unary_op!(/// y = √x; y' = 1/(2y). Saves: output.
    Sqrt, "sqrt", "Sqrt", Keep, Output, |_s, x| x.sqrt(), |_s, _x, y| (y + y).recip());
unary_op!(/// y = xᵖ; y' = p·xᵖ⁻¹. Saves: input. Autocast runs it in f32.
    Pow, "pow", "Pow", Widen, Input, |p, x| x.powf(p), |p, x, _y| p * x.powf(p - T::one()));

impl Tensor {
    /// −x.
    pub fn neg(&self) -> Result<Tensor> {
        apply(self, Neg(0.0))
    }
    /// x + s for a scalar s.
    pub fn add_scalar(&self, s: f64) -> Result<Tensor> {
        apply(self, AddScalar(s))
    }
    /// x · s for a scalar s.
    pub fn mul_scalar(&self, s: f64) -> Result<Tensor> {
        apply(self, MulScalar(s))
    }
    /// Elementwise eˣ.
    pub fn exp(&self) -> Result<Tensor> {
        apply(self, Exp(0.0))
    }
    /// Elementwise natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        apply(self, Log(0.0))
    }
    /// Elementwise tanh.
    pub fn tanh(&self) -> Result<Tensor> {
        apply(self, Tanh(0.0))
    }
    /// Elementwise logistic sigmoid.
    pub fn sigmoid(&self) -> Result<Tensor> {
        apply(self, Sigmoid(0.0))
    }
    /// Elementwise max(x, 0).
    pub fn relu(&self) -> Result<Tensor> {
        apply(self, Relu(0.0))
    }
    /// Elementwise square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        apply(self, Sqrt(0.0))
    }
    /// Elementwise xᵖ for a scalar exponent.
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        apply(self, Pow(p))
    }
}
