//! add, sub, mul, div with NumPy broadcasting. The gradient of a broadcast operand is the
//! output gradient summed over the broadcast dims.

use crate::autograd::{Backward, Grads};
use crate::backend::BackendStorage;
use crate::error::Result;
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::{Cast, OpSpec};
use crate::ops::{same_dtype, save};
use crate::shape::{self, Shape};
use crate::tensor::Tensor;
use smallvec::smallvec;

use crate::backend::BinaryOp as Kind;

static ADD: OpSpec = OpSpec::new("add", "Add").cast(Cast::Promote);
static SUB: OpSpec = OpSpec::new("sub", "Sub").cast(Cast::Promote);
static MUL: OpSpec = OpSpec::new("mul", "Mul").cast(Cast::Promote);
static DIV: OpSpec = OpSpec::new("div", "Div").cast(Cast::Promote);

/// The declaration of `kind`'s op.
fn spec(kind: Kind) -> &'static OpSpec {
    match kind {
        Kind::Add => &ADD,
        Kind::Sub => &SUB,
        Kind::Mul => &MUL,
        Kind::Div => &DIV,
    }
}

fn forward(kind: Kind, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    dispatch::apply(
        spec(kind),
        &[a, b],
        |xs| kernel(kind, xs[0], xs[1]).map(Forward::from),
        |xs, _| {
            let (a, b) = (xs[0], xs[1]);
            let (need_a, need_b) = (a.requires_grad(), b.requires_grad());
            BinaryBackward {
                kind,
                a_shape: a.shape().into(),
                b_shape: b.shape().into(),
                // Saves: mul keeps the other operand of each input that needs a gradient;
                // div keeps b (for da and db) and a (for db); add and sub keep nothing.
                a: match kind {
                    Kind::Mul if need_b => Some(save(a)),
                    Kind::Div if need_b => Some(save(a)),
                    _ => None,
                },
                b: match kind {
                    Kind::Mul if need_a => Some(save(b)),
                    Kind::Div => Some(save(b)),
                    _ => None,
                },
            }
        },
    )
}

/// a ∘ b with broadcasting, not recorded.
fn kernel(kind: Kind, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let op = spec(kind).name;
    same_dtype(op, a, b)?;
    let out_shape = shape::broadcast(op, a.shape(), b.shape())?;
    let shapes = (a.shape(), b.shape(), &out_shape[..]);
    let out = a.data().binary(&b.data(), kind, shapes, op)?;
    Ok(Tensor::activation(out, out_shape))
}

struct BinaryBackward {
    kind: Kind,
    a_shape: Shape,
    b_shape: Shape,
    a: Option<Tensor>,
    b: Option<Tensor>,
}

fn sum_to(g: &Tensor, to: &[usize]) -> Result<Tensor> {
    if g.shape() == to {
        return Ok(g.clone());
    }
    let out = g.data().sum_to(g.shape(), to)?;
    Ok(Tensor::activation(out, to.into()))
}

impl Backward for BinaryBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let (ga, gb) = match self.kind {
            Kind::Add => (
                needs[0].then(|| sum_to(g, &self.a_shape)).transpose()?,
                needs[1].then(|| sum_to(g, &self.b_shape)).transpose()?,
            ),
            Kind::Sub => (
                needs[0].then(|| sum_to(g, &self.a_shape)).transpose()?,
                if needs[1] {
                    Some(sum_to(g, &self.b_shape)?.neg_raw()?)
                } else {
                    None
                },
            ),
            Kind::Mul => (
                match (needs[0], &self.b) {
                    (true, Some(b)) => Some(mul_reduce(g, b, &self.a_shape)?),
                    _ => None,
                },
                match (needs[1], &self.a) {
                    (true, Some(a)) => Some(mul_reduce(g, a, &self.b_shape)?),
                    _ => None,
                },
            ),
            Kind::Div => {
                let b = self.b.as_ref().expect("div always saves b");
                let ga = if needs[0] {
                    Some(div_reduce(g, b, &self.a_shape)?)
                } else {
                    None
                };
                let gb = match (needs[1], &self.a) {
                    // d(a/b)/db = −a/b²: computed as −(g·a/b)/b on the broadcast shape.
                    (true, Some(a)) => {
                        let q = kernel(Kind::Mul, g, a)?;
                        let q = kernel(Kind::Div, &q, b)?;
                        let q = kernel(Kind::Div, &q, b)?;
                        Some(sum_to(&q, &self.b_shape)?.neg_raw()?)
                    }
                    _ => None,
                };
                (ga, gb)
            }
        };
        Ok(smallvec![ga, gb])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        self.a.iter().chain(self.b.iter()).for_each(f);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}

fn mul_reduce(g: &Tensor, t: &Tensor, to: &[usize]) -> Result<Tensor> {
    let p = kernel(Kind::Mul, g, t)?;
    sum_to(&p, to)
}

fn div_reduce(g: &Tensor, t: &Tensor, to: &[usize]) -> Result<Tensor> {
    let p = kernel(Kind::Div, g, t)?;
    sum_to(&p, to)
}

impl Tensor {
    fn neg_raw(&self) -> Result<Tensor> {
        let out = self.data().unary(crate::ops::unary::Neg(0.0))?;
        Ok(Tensor::activation(out, self.shape().into()))
    }

    /// Elementwise a + b with broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        forward(Kind::Add, self, other)
    }
    /// Elementwise a − b with broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        forward(Kind::Sub, self, other)
    }
    /// Elementwise a · b with broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        forward(Kind::Mul, self, other)
    }
    /// Elementwise a / b with broadcasting.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        forward(Kind::Div, self, other)
    }
}
