//! Backward: one reverse sweep over the tape, freeing each entry's saved tensors and
//! intermediate gradient as soon as they have been used.

use crate::backend::{BackendStorage, Copy2d};
use crate::error::{Error, Result};
use crate::tape::graph::{Input, Tape};
use crate::tape::{NoGradGuard, Refill, recompute, stack, versions};
use crate::tensor::{NodeId, Tensor};
use smallvec::SmallVec;
use std::rc::Rc;

mod ready;

pub use crate::tape::{Backward, Grads};
pub use ready::GradReady;
use ready::Ready;

/// Options of a backward call.
#[derive(Debug, Clone, Default)]
pub struct BackwardOptions {
    /// Keep saved tensors so the graph can be backwarded again (PyTorch's `retain_graph`).
    pub retain_graph: bool,
    /// Called once per trainable leaf the backward reaches, as soon as its `.grad` is final
    /// (during the sweep: data parallelism reduces a bucket while the rest runs). No cost
    /// when `None`.
    pub on_grad_ready: Option<GradReady>,
}

impl Tensor {
    /// dL/dleaf for every leaf that requires grad, accumulated into `.grad`
    /// (PyTorch's `loss.backward()`); only scalars get the implicit gradient 1.
    pub fn backward(&self) -> Result<()> {
        self.backward_with(None, BackwardOptions::default())
    }

    /// Backward with an explicit output gradient and options.
    pub fn backward_with(&self, grad: Option<&Tensor>, opts: BackwardOptions) -> Result<()> {
        // A checkpoint rerun that has everything it needs runs the rest of its body inert.
        if recompute::stopped() {
            return Ok(());
        }
        recompute::note_backward();
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
            Some(g) if g.device() != self.device() => {
                return Err(Error::DeviceMismatch {
                    op: "backward",
                    lhs: self.device().to_string(),
                    rhs: g.device().to_string(),
                });
            }
            Some(g) => g.detach(),
            None if self.numel() != 1 => return Err(Error::NonScalarBackward),
            None => Tensor::full(self.shape(), 1.0, self.dtype())?
                .to_device(&self.device())?
                .detach(),
        };
        match self.node() {
            None => {
                self.accumulate_grad(seed)?;
                if let Some(hook) = &opts.on_grad_ready {
                    Ready::leaf(hook, self);
                }
                Ok(())
            }
            Some(id) => {
                let outer = sweep(&[(id, seed)], opts.retain_graph, opts.on_grad_ready)?;
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
    let all = Copy2d {
        rows: 1,
        width: g.numel(),
        src_stride: 0,
        src_at: 0,
        dst_stride: 0,
        dst_at: 0,
    };
    g.data().copy2d(&mut acc.storage().borrow_mut(), all, true)
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
/// reach entries of other tapes are returned for the caller to route. What checkpoint
/// segments recompute for this sweep is emptied again when it ends. `on_ready` is called for
/// each leaf once its gradient is final (a segment's inner sweep passes `None`: its captured
/// leaves are final when the segment's entry is).
pub(crate) fn sweep(
    roots: &[(NodeId, Tensor)],
    retain_graph: bool,
    on_ready: Option<GradReady>,
) -> Result<Vec<(NodeId, Tensor)>> {
    struct Release(usize);
    impl Drop for Release {
        fn drop(&mut self) {
            recompute::release_since(self.0);
        }
    }
    let _release = Release(recompute::refilled_mark());
    let _ng = NoGradGuard::new();
    let tape_id = roots[0].0.tape;
    let mut top = 0;
    let mut ready = stack::with_tape(tape_id, |t| -> Result<Option<Ready>> {
        for (id, g) in roots {
            let e = match t.entries.get_mut(id.index as usize) {
                Some(e) if id.tape == tape_id && id.generation == t.generation && !e.freed => e,
                _ => return Err(Error::GraphFreed),
            };
            e.grad = Some(match e.grad.take() {
                None => g.clone(),
                Some(acc) => add_grads(acc, g.clone())?,
            });
            top = top.max(id.index as usize);
        }
        let roots: Vec<usize> = roots.iter().map(|(id, _)| id.index as usize).collect();
        Ok(on_ready.map(|hook| Ready::count(hook, t, &roots)))
    })??;

    let mut outer = Vec::new();
    // Each iteration takes the tape once: it finishes the entry whose backward just ran (frees
    // it, routes its gradients) and takes the next entry down that has a gradient.
    let mut pending: Option<(usize, Box<dyn Backward>, Grads)> = None;
    let mut next = top + 1;
    loop {
        let step = stack::with_tape(tape_id, |t| -> Result<Option<NextEntry>> {
            if let Some((i, backward, grads)) = pending.take() {
                finish(
                    t,
                    i,
                    backward,
                    grads,
                    retain_graph,
                    &mut outer,
                    ready.as_mut(),
                )?;
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
                    versions::check(bw.as_ref(), &e.versions, e.op, |k| match e.inputs.get(k) {
                        Some(Input::Node(id)) if t.owns(*id) => {
                            Some(t.entries[id.index as usize].op)
                        }
                        _ => None,
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
                return Ok(Some(NextEntry {
                    index: next,
                    grad: g,
                    backward,
                    needs,
                    output: e.output.upgrade(),
                    refill: e.refill.clone(),
                }));
            }
            Ok(None)
        })??;
        if let Some(r) = &mut ready {
            r.fire();
        }
        let Some(NextEntry {
            index: i,
            grad: g,
            backward,
            needs,
            output,
            refill,
        }) = step
        else {
            break;
        };
        // A checkpoint segment's emptied saved tensors come back before the entry uses them.
        if let Err(e) = refill_saved(backward.as_ref(), refill.as_deref()) {
            let _ = stack::with_tape(tape_id, |t| t.entries[i].backward = Some(backward));
            return Err(e);
        }
        if let Some(out) = output.map(Tensor)
            && out.retains_grad()
        {
            out.accumulate_grad(g.clone())?;
        }
        // An op whose gradient is mostly zeros adds it straight into its input's gradient so
        // far, when there is one (a tensor narrowed into blocks: one full-size buffer, not
        // one per block).
        let added = match backward.adds_in_place() {
            false => false,
            true => match add_in_place(tape_id, i, backward.as_ref(), &g) {
                Ok(added) => added,
                Err(e) => {
                    let _ = stack::with_tape(tape_id, |t| t.entries[i].backward = Some(backward));
                    return Err(e);
                }
            },
        };
        if added {
            drop(g);
            pending = Some((i, backward, Grads::new()));
            continue;
        }
        let run = match retain_graph {
            true => Backward::backward,
            false => Backward::backward_last,
        };
        let grads = match run(backward.as_ref(), &g, &needs) {
            Ok(grads) => grads,
            Err(e) => {
                // Put the backward back so clearing the tape still releases what it saved.
                let _ = stack::with_tape(tape_id, |t| t.entries[i].backward = Some(backward));
                return Err(e);
            }
        };
        drop(g);
        pending = Some((i, backward, grads));
    }
    stack::with_tape(tape_id, |t| t.collect())?;
    if let Some(r) = ready {
        r.finish();
    }
    Ok(outer)
}

/// Refills `bw`'s saved tensors that were kept as recipes (autocast's casts of weights), then
/// runs the rerun that refills those checkpointing emptied, if any.
fn refill_saved(bw: &dyn Backward, refill: Option<&dyn Refill>) -> Result<()> {
    let mut recast = Ok(());
    bw.visit_saved(&mut |t| {
        if recast.is_ok() && t.storage().is_pending() {
            recast = crate::ops::autocast::refill(t.storage());
        }
    });
    recast?;
    let Some(refill) = refill else {
        return Ok(());
    };
    let any_empty = || {
        let mut empty = false;
        bw.visit_saved(&mut |t| empty |= t.storage().is_pending());
        empty
    };
    if !any_empty() {
        return Ok(());
    }
    refill.refill()?;
    if any_empty() {
        return Err(Error::Checkpoint(
            "a saved tensor emptied by checkpointing was not recomputed".into(),
        ));
    }
    Ok(())
}

/// The next entry the sweep runs, taken off the tape while its backward runs.
struct NextEntry {
    index: usize,
    grad: Tensor,
    backward: Box<dyn Backward>,
    needs: SmallVec<[bool; 4]>,
    output: Option<Rc<crate::tensor::TensorImpl>>,
    refill: Option<Rc<dyn Refill>>,
}

/// Lets entry `i`'s op add `g`'s contribution into its one input's gradient so far — an
/// entry's of this tape or a leaf's `.grad` — where that gradient is held exclusively; true
/// when it did.
#[inline(never)] // off the sweep's hot path: few ops add in place
fn add_in_place(tape_id: u32, i: usize, bw: &dyn Backward, g: &Tensor) -> Result<bool> {
    enum Target {
        Entry(usize),
        Leaf(Tensor),
    }
    let usable = |acc: &Tensor| acc.is_exclusive() && acc.dtype() == g.dtype();
    let found = stack::with_tape(tape_id, |t| {
        let (generation, tape) = (t.generation, t.id);
        match t.entries[i].inputs.as_slice() {
            &[Input::Node(id)] if id.tape == tape && id.generation == generation => {
                let e = t.entries.get_mut(id.index as usize).filter(|e| !e.freed)?;
                match &e.grad {
                    Some(acc) if usable(acc) => e
                        .grad
                        .take()
                        .map(|acc| (Target::Entry(id.index as usize), acc)),
                    _ => None,
                }
            }
            [Input::Leaf(leaf)] => {
                let mut slot = leaf.0.grad.borrow_mut();
                match &*slot {
                    Some(acc) if usable(acc) => {
                        slot.take().map(|acc| (Target::Leaf(leaf.clone()), acc))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    })?;
    let Some((target, acc)) = found else {
        return Ok(false);
    };
    let added = bw.add_into(g, &acc);
    match target {
        Target::Entry(index) => {
            stack::with_tape(tape_id, |t| t.entries[index].grad = Some(acc))?;
        }
        Target::Leaf(leaf) => *leaf.0.grad.borrow_mut() = Some(acc),
    }
    added
}

/// Puts entry `i`'s backward back (retain_graph) or frees the entry, then adds its gradients
/// to their destinations: the producing entry, a leaf's `.grad`, or the caller (other tapes);
/// its leaves' contributions are then done for `ready`.
fn finish(
    t: &mut Tape,
    i: usize,
    backward: Box<dyn Backward>,
    grads: Grads,
    retain_graph: bool,
    outer: &mut Vec<(NodeId, Tensor)>,
    ready: Option<&mut Ready>,
) -> Result<()> {
    t.entries[i].backward = Some(backward);
    // Route the gradients first (the inputs are lent out meanwhile): freeing the entry
    // releases its inputs, and an input with a gradient waiting is kept for the sweep.
    let inputs = std::mem::take(&mut t.entries[i].inputs);
    let routed = route(t, &inputs, grads, outer);
    t.entries[i].inputs = inputs;
    routed?;
    if let Some(r) = ready {
        r.entry_done(t, i);
    }
    if !retain_graph || t.entries[i].refs == 0 {
        t.free(i);
    }
    Ok(())
}

/// Adds each gradient to its destination: the producing entry, a leaf's `.grad`, or the
/// caller (other tapes).
fn route(
    t: &mut Tape,
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
                let e = match t.entries.get_mut(id.index as usize) {
                    Some(e) if !e.freed => e,
                    _ => return Err(Error::GraphFreed),
                };
                e.grad = Some(match e.grad.take() {
                    None => g,
                    Some(acc) => add_grads(acc, g)?,
                });
            }
        }
    }
    Ok(())
}
