//! Backward: one reverse sweep over the tape, freeing each entry's saved tensors and
//! intermediate gradient as soon as they have been used.

use crate::error::{Error, Result};
use crate::tape::{self, Input, NoGradGuard};
use crate::tensor::{NodeId, Tensor};
use crate::{cpu, zip_buffers};
use smallvec::SmallVec;

pub use crate::tape::{Backward, Grads};

/// Options of a backward call.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackwardOptions {
    /// Keep saved tensors so the graph can be backwarded again (PyTorch's `retain_graph`).
    pub retain_graph: bool,
}

impl Tensor {
    /// dL/dleaf for every leaf that requires grad, accumulated into `.grad`
    /// (PyTorch's `loss.backward()`); only scalars get the implicit gradient 1.
    pub fn backward(&self) -> Result<()> {
        self.backward_with(None, BackwardOptions::default())
    }

    /// Backward with an explicit output gradient and options.
    pub fn backward_with(&self, grad: Option<&Tensor>, opts: BackwardOptions) -> Result<()> {
        if !self.requires_grad() {
            return Err(Error::NoGradFn {
                explanation: crate::cuts::explain(self.cuts()),
            });
        }
        let seed = match grad {
            Some(g) if g.shape() != self.shape() => {
                return Err(Error::ShapeMismatch {
                    op: "backward",
                    lhs: self.shape().to_vec(),
                    rhs: g.shape().to_vec(),
                });
            }
            Some(g) if g.dtype() != self.dtype() => {
                return Err(Error::DTypeMismatch {
                    op: "backward",
                    lhs: self.dtype(),
                    rhs: g.dtype(),
                });
            }
            Some(g) => g.detach(),
            None if self.numel() != 1 => return Err(Error::NonScalarBackward),
            None => Tensor::full(self.shape(), 1.0, self.dtype())?,
        };
        match self.node() {
            None => self.accumulate_grad(seed),
            Some(id) => {
                let outer = sweep(&[(id, seed)], opts.retain_graph)?;
                if outer.is_empty() {
                    Ok(())
                } else {
                    Err(Error::invalid(
                        "backward",
                        "gradient reached a tensor recorded on an outer tape",
                    ))
                }
            }
        }
    }
}

impl Tensor {
    /// Adds `g` into this tensor's `.grad` (first contribution is stored as is).
    pub(crate) fn accumulate_grad(&self, g: Tensor) -> Result<()> {
        let mut slot = self.0.grad.borrow_mut();
        *slot = Some(match slot.take() {
            None => g,
            Some(acc) => add_grads(acc, g)?,
        });
        Ok(())
    }
}

/// `acc += g` in place (same shape and dtype).
fn add_assign(acc: &Tensor, g: &Tensor) -> Result<()> {
    let src = g.data();
    let mut dst = acc.storage().borrow_mut();
    zip_buffers!("accumulate_grad", &mut *dst, &*src, d, s => cpu::zip_assign(d, s, #[inline(always)] |x, y| x + y))
}

/// Sums two gradients, in place when nothing else can observe `acc`.
pub(crate) fn add_grads(acc: Tensor, g: Tensor) -> Result<Tensor> {
    if acc.shape() != g.shape() {
        return Err(Error::ShapeMismatch {
            op: "accumulate_grad",
            lhs: acc.shape().to_vec(),
            rhs: g.shape().to_vec(),
        });
    }
    let _ng = NoGradGuard::new();
    if acc.is_exclusive() {
        add_assign(&acc, &g)?;
        Ok(acc)
    } else {
        acc.add(&g)
    }
}

/// Backpropagates from `roots` (all on one tape) down to the tape's start. Gradients that
/// reach entries of other tapes are returned for the caller to route.
pub(crate) fn sweep(
    roots: &[(NodeId, Tensor)],
    retain_graph: bool,
) -> Result<Vec<(NodeId, Tensor)>> {
    let _ng = NoGradGuard::new();
    let tape_id = roots[0].0.tape;
    let mut top = 0;
    tape::with_tape(tape_id, |t| -> Result<()> {
        for (id, g) in roots {
            if id.tape != tape_id
                || id.generation != t.generation
                || t.entries[id.index as usize].freed
            {
                return Err(Error::GraphFreed);
            }
            let slot = &mut t.entries[id.index as usize].grad;
            *slot = Some(match slot.take() {
                None => g.clone(),
                Some(acc) => add_grads(acc, g.clone())?,
            });
            top = top.max(id.index as usize);
        }
        Ok(())
    })??;

    let mut outer = Vec::new();
    // Each iteration takes the tape once: it finishes the entry whose backward just ran (frees
    // it, routes its gradients) and takes the next entry down that has a gradient.
    let mut pending: Option<(usize, Box<dyn Backward>, Grads)> = None;
    let mut next = top + 1;
    loop {
        let step = tape::with_tape(tape_id, |t| -> Result<Option<Step>> {
            if let Some((i, backward, grads)) = pending.take() {
                finish(t, i, backward, grads, retain_graph, &mut outer)?;
            }
            while next > 0 {
                next -= 1;
                let e = &t.entries[next];
                if e.grad.is_none() {
                    continue;
                }
                if let Some(bw) = &e.backward
                    && e.epoch != crate::storage::inplace_epoch()
                {
                    crate::inplace::check(bw.as_ref(), &e.versions, e.op, |k| {
                        match e.inputs.get(k) {
                            Some(Input::Node(id))
                                if id.tape == t.id && id.generation == t.generation =>
                            {
                                Some(t.entries[id.index as usize].op)
                            }
                            _ => None,
                        }
                    })?;
                }
                let e = &mut t.entries[next];
                let Some(g) = e.grad.take() else { continue };
                let backward = e.backward.take().ok_or(Error::GraphFreed)?;
                let needs = e
                    .inputs
                    .iter()
                    .map(|x| !matches!(x, Input::Const))
                    .collect();
                return Ok(Some((
                    next,
                    g,
                    backward,
                    needs,
                    e.output.upgrade(),
                    e.refill.clone(),
                )));
            }
            Ok(None)
        })??;
        let Some((i, g, backward, needs, output, refill)) = step else {
            break;
        };
        // A selective segment's evicted outputs come back before the first of its entries runs.
        if let Some(r) = refill
            && let Err(e) = r.refill()
        {
            let _ = tape::with_tape(tape_id, |t| t.entries[i].backward = Some(backward));
            return Err(e);
        }
        if let Some(out) = output.map(Tensor)
            && out.retains_grad()
        {
            out.accumulate_grad(g.clone())?;
        }
        let grads = match backward.backward(&g, &needs) {
            Ok(grads) => grads,
            Err(e) => {
                // Put the backward back so clearing the tape still releases what it saved.
                let _ = tape::with_tape(tape_id, |t| t.entries[i].backward = Some(backward));
                return Err(e);
            }
        };
        drop(g);
        pending = Some((i, backward, grads));
    }
    tape::with_tape(tape_id, |t| t.collect())?;
    Ok(outer)
}

type Step = (
    usize,
    Tensor,
    Box<dyn Backward>,
    SmallVec<[bool; 4]>,
    Option<std::rc::Rc<crate::tensor::TensorImpl>>,
    Option<std::rc::Rc<dyn tape::evict::Refill>>,
);

/// Puts entry `i`'s backward back (retain_graph) or frees the entry, then adds its gradients
/// to their destinations: the producing entry, a leaf's `.grad`, or the caller (other tapes).
fn finish(
    t: &mut tape::Tape,
    i: usize,
    backward: Box<dyn Backward>,
    grads: Grads,
    retain_graph: bool,
    outer: &mut Vec<(NodeId, Tensor)>,
) -> Result<()> {
    t.entries[i].backward = Some(backward);
    // Route the gradients first (the inputs are lent out meanwhile): freeing the entry
    // releases its inputs, and an input with a gradient waiting is kept for the sweep.
    let inputs = std::mem::take(&mut t.entries[i].inputs);
    let routed = route(t, &inputs, grads, outer);
    t.entries[i].inputs = inputs;
    routed?;
    if !retain_graph || t.entries[i].refs == 0 {
        t.free(i);
    }
    Ok(())
}

/// Adds each gradient to its destination: the producing entry, a leaf's `.grad`, or the
/// caller (other tapes).
fn route(
    t: &mut tape::Tape,
    inputs: &[Input],
    grads: Grads,
    outer: &mut Vec<(NodeId, Tensor)>,
) -> Result<()> {
    for (input, g) in inputs.iter().zip(grads) {
        let Some(g) = g else { continue };
        match *input {
            Input::Const => {}
            Input::Leaf(ref leaf) => leaf.accumulate_grad(g)?,
            Input::Node(id) if id.tape != t.id => outer.push((id, g)),
            Input::Node(id) => {
                if id.generation != t.generation {
                    return Err(Error::GraphFreed);
                }
                let e = &mut t.entries[id.index as usize];
                if e.freed {
                    return Err(Error::GraphFreed);
                }
                e.grad = Some(match e.grad.take() {
                    None => g,
                    Some(acc) => add_grads(acc, g)?,
                });
            }
        }
    }
    Ok(())
}
