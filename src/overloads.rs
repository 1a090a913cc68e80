//! Operator overloads on `&Tensor`: the documented panicking convenience layer. Each panics
//! with the same message the `Result` method returns (`a.add(&b)?` is the fallible form).

use crate::tensor::Tensor;
use std::ops::{Add, Div, Mul, Neg, Sub};

macro_rules! overload {
    ($tr:ident, $m:ident) => {
        impl $tr<&Tensor> for &Tensor {
            type Output = Tensor;
            /// Panics with the op's error message on bad operands.
            fn $m(self, rhs: &Tensor) -> Tensor {
                Tensor::$m(self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl $tr<f64> for &Tensor {
            type Output = Tensor;
            /// Applies the scalar elementwise.
            fn $m(self, rhs: f64) -> Tensor {
                let r = match stringify!($m) {
                    "add" => self.add_scalar(rhs),
                    "sub" => self.add_scalar(-rhs),
                    "mul" => self.mul_scalar(rhs),
                    _ => self.mul_scalar(1.0 / rhs),
                };
                r.unwrap_or_else(|e| panic!("{e}"))
            }
        }
    };
}

overload!(Add, add);
overload!(Sub, sub);
overload!(Mul, mul);
overload!(Div, div);

impl Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(self).unwrap_or_else(|e| panic!("{e}"))
    }
}
