//! Matrix product, 2-D and batched. With G = dL/dC: dA = G·Bᵀ, dB = Aᵀ·G (summed over the
//! batch when B is shared). Saves: A when B needs a gradient, B when A does.

use crate::autograd::{Backward, Grads};
use crate::cpu::gemm::{Gemm, Layout};
use crate::error::{Error, Result};
use crate::ops::dispatch::{self, Forward};
use crate::ops::spec::{Cast, OpSpec};
use crate::ops::{same_dtype, save};
use crate::shape::{Shape, numel};
use crate::storage::IntoBuffer;
use crate::tensor::Tensor;
use crate::zip_buffers;
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

/// C\[i\] = op(A\[i\])·op(B\[i\]) over the batch; a shared C (`c_shared`) accumulates all of them.
#[allow(clippy::too_many_arguments)]
fn batched<E: Gemm>(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a: &[E],
    la: Layout,
    a_shared: bool,
    b: &[E],
    lb: Layout,
    b_shared: bool,
    c_shared: bool,
) -> Result<Vec<E>> {
    if m == 0 || n == 0 || k == 0 {
        // Empty, or sums over nothing: zeros, without looping over the batch.
        return crate::cpu::zeroed("matmul", if c_shared { m * n } else { batch * m * n });
    }
    if !c_shared {
        let len = batch * m * n;
        let mut c: Vec<E> = crate::cpu::with_capacity("matmul", len)?;
        let spare = &mut c.spare_capacity_mut()[..len];
        crate::cpu::gemm::batch(batch, (m, k, n), a, la, a_shared, b, lb, b_shared, spare);
        // SAFETY: the capacity is at least `len` and `batch` wrote each of the `batch` m×n
        // products over it, all `len` elements.
        unsafe { c.set_len(len) };
        return Ok(c);
    }
    let mut c = crate::cpu::zeroed("matmul", m * n)?;
    // One C summed over the batch, in batch order.
    for i in 0..batch {
        let ai = if a_shared {
            a
        } else {
            &a[i * m * k..(i + 1) * m * k]
        };
        let bi = if b_shared {
            b
        } else {
            &b[i * k * n..(i + 1) * k * n]
        };
        E::gemm(m, k, n, ai, la, bi, lb, i > 0, &mut c);
    }
    Ok(c)
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
                        zip_buffers!("matmul", &*a.data(), &*b.data(), x, y =>
                            batched(plan.batch, plan.m, plan.k, plan.n, x, Layout::Normal, plan.a_shared, y, Layout::Normal, plan.b_shared, false)?.into_buffer())
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
            // dA[i] = G[i] (m×n) · B[i]ᵀ (n×k)
            (true, Some(b)) => Some(
                zip_buffers!("matmul_backward", &*g.data(), &*b.data(), gv, bv =>
                batched(batch, m, n, k, gv, Layout::Normal, false, bv, Layout::Transposed, b_shared, a_shared)?.into_buffer())?,
            ),
            _ => None,
        };
        let gb = match (needs[1], &self.a) {
            // dB[i] = A[i]ᵀ (k×m) · G[i] (m×n)
            (true, Some(a)) => Some(
                zip_buffers!("matmul_backward", &*a.data(), &*g.data(), av, gv =>
                batched(batch, k, m, n, av, Layout::Transposed, a_shared, gv, Layout::Normal, false, b_shared)?.into_buffer())?,
            ),
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
