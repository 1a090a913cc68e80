//! Matrix product, 2-D and batched. With G = dL/dC: dA = G·Bᵀ, dB = Aᵀ·G (summed over the
//! batch when B is shared). Saves: A when B needs a gradient, B when A does.

use crate::autograd::{Backward, Grads};
use crate::backend::Layout;
use crate::backend::{BackendStorage, Product};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::{Cast, OpSpec};
use crate::ops::{same_dtype, save};
use crate::shape::{Shape, numel};
use crate::tensor::Tensor;
use smallvec::smallvec;

/// The batch structure of one product: `batch` products of m×k by k×n; a shared operand has
/// batch stride 0.
#[derive(Debug, Clone, Copy)]
struct BatchPlan {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a_shared: bool,
    b_shared: bool,
}

impl BatchPlan {
    /// The forward product with these layouts.
    fn product(&self, la: Layout, lb: Layout, c_shared: bool) -> Product {
        Product {
            batch: self.batch,
            m: self.m,
            k: self.k,
            n: self.n,
            la,
            lb,
            a_shared: self.a_shared,
            b_shared: self.b_shared,
            c_shared,
        }
    }
}

fn plan(a: &[usize], b: &[usize]) -> Result<(BatchPlan, Shape)> {
    let err = || Error::ShapeMismatch {
        op: "matmul",
        lhs: a.to_vec(),
        rhs: b.to_vec(),
    };
    if a.len() < 2 || b.len() < 2 {
        return Err(Error::invalid(
            "matmul",
            format!("both operands need at least 2 dims, got {a:?} and {b:?}"),
        ));
    }
    let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
    let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
    if k != k2 {
        return Err(err());
    }
    let (ba, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
    let (batch_dims, a_shared, b_shared) = match (ba.is_empty(), bb.is_empty()) {
        (_, true) => (ba, false, true),
        (true, false) => (bb, true, false),
        (false, false) if ba == bb => (ba, false, false),
        _ => return Err(err()),
    };
    let mut out: Shape = batch_dims.into();
    out.push(m);
    out.push(n);
    crate::shape::checked_numel("matmul", &out)?;
    let batch = numel(batch_dims);
    // A batched A times a shared B is one tall product.
    if b_shared && !a_shared {
        return Ok((
            BatchPlan {
                batch: 1,
                m: batch * m,
                k,
                n,
                a_shared: false,
                b_shared: true,
            },
            out,
        ));
    }
    Ok((
        BatchPlan {
            batch,
            m,
            k,
            n,
            a_shared,
            b_shared,
        },
        out,
    ))
}

static MATMUL: OpSpec = OpSpec::new("matmul", "Mm").cast(Cast::Lower).dot();

impl Tensor {
    /// Matrix product `self · other` for `[..., m, k] · [..., k, n]`; batch dims must match,
    /// or one operand is 2-D and shared across the other's batch.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        // Casting changes dtypes, never shapes: the plan holds for the cast operands.
        let (plan, shape) = plan(self.shape(), other.shape())?;
        dispatch::apply(
            &MATMUL,
            &[self, other],
            |xs| {
                let (a, b) = (xs[0].clone(), xs[1].clone());
                same_dtype("matmul", &a, &b)?;
                Ok(Forward::Product {
                    shape,
                    dtype: a.dtype(),
                    compute: Box::new(move || {
                        a.data().product(
                            &b.data(),
                            plan.product(Layout::Normal, Layout::Normal, false),
                            "matmul",
                        )
                    }),
                })
            },
            |xs, _| MatmulBackward {
                plan,
                a_shape: xs[0].shape().into(),
                b_shape: xs[1].shape().into(),
                a: xs[1].requires_grad().then(|| save(xs[0])),
                b: xs[0].requires_grad().then(|| save(xs[1])),
            },
        )
    }
}

struct MatmulBackward {
    plan: BatchPlan,
    a_shape: Shape,
    b_shape: Shape,
    a: Option<Tensor>,
    b: Option<Tensor>,
}

impl Backward for MatmulBackward {
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Grads> {
        let BatchPlan {
            batch,
            m,
            k,
            n,
            a_shared,
            b_shared,
        } = self.plan;
        let ga = match (needs[0], &self.b) {
            // dA[i] = G[i] (m×n) · B[i]ᵀ (n×k), summed over the batch when A is shared.
            (true, Some(b)) => {
                let p = Product {
                    batch,
                    m,
                    k: n,
                    n: k,
                    la: Layout::Normal,
                    lb: Layout::Transposed,
                    a_shared: false,
                    b_shared,
                    c_shared: a_shared,
                };
                Some(g.data().product(&b.data(), p, "matmul_backward")?)
            }
            _ => None,
        };
        let gb = match (needs[1], &self.a) {
            // dB[i] = A[i]ᵀ (k×m) · G[i] (m×n), summed over the batch when B is shared.
            (true, Some(a)) => {
                let p = Product {
                    batch,
                    m: k,
                    k: m,
                    n,
                    la: Layout::Transposed,
                    lb: Layout::Normal,
                    a_shared,
                    b_shared: false,
                    c_shared: b_shared,
                };
                Some(a.data().product(&g.data(), p, "matmul_backward")?)
            }
            _ => None,
        };
        Ok(smallvec![
            ga.map(|d| Tensor::activation(d, self.a_shape.clone())),
            gb.map(|d| Tensor::activation(d, self.b_shape.clone()))
        ])
    }
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor)) {
        self.a.iter().chain(self.b.iter()).for_each(f);
    }
    fn saved_other_bytes(&self) -> usize {
        0
    }
}
