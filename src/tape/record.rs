//! Recording: the one place an op's output joins the tape. When grad mode is on and an input
//! requires grad, an entry holding the op's backward is appended and what it saved is counted;
//! otherwise nothing is recorded and nothing is saved.

use super::accounting::memory_add;
use super::backward::Backward;
use super::grad_mode::is_grad_enabled;
use super::graph::{Entry, Input};
use super::{recompute, stack, versions};
use crate::ops::spec::OpSpec;
use crate::tensor::{NodeId, Tensor};
use smallvec::SmallVec;

/// Whether an op on `inputs` records now: grad mode is on and an input requires grad.
pub(crate) fn needed(inputs: &[&Tensor]) -> bool {
    is_grad_enabled() && inputs.iter().any(|t| t.requires_grad())
}

/// Records `op`, which produced `output` from `inputs`; `make_backward` builds its backward
/// (it receives the output, for ops that save it).
pub(crate) fn record<B: Backward + 'static>(
    op: &'static OpSpec,
    inputs: &[&Tensor],
    output: Tensor,
    make_backward: impl FnOnce(&Tensor) -> B,
) -> Tensor {
    record_if(needed(inputs), op, inputs, output, make_backward)
}

/// [`record`] with the decision made by the caller (a reentrant checkpoint segment requires
/// grad when an explicit input does, whatever its body did).
pub(crate) fn record_if<B: Backward + 'static>(
    needed: bool,
    op: &'static OpSpec,
    inputs: &[&Tensor],
    mut output: Tensor,
    make_backward: impl FnOnce(&Tensor) -> B,
) -> Tensor {
    let watched = recompute::active();
    if watched {
        recompute::on_record(needed, op, inputs, &mut output);
    }
    output.set_cuts(Tensor::merged_cuts(inputs.iter().copied()));
    if !needed {
        return output;
    }
    output.0.requires_grad.set(true);
    let backward: Box<dyn Backward> = Box::new(make_backward(&output));
    let refill = if watched {
        recompute::refill_for_record()
    } else {
        None
    };
    let sources = inputs;
    let inputs: SmallVec<[Input; 2]> = inputs
        .iter()
        .map(|t| match (t.requires_grad(), t.node()) {
            (false, _) => Input::Const,
            (true, Some(id)) => Input::Node(id),
            (true, None) => Input::Leaf((*t).clone()),
        })
        .collect();
    let id = stack::with_top(|tape| {
        let other = backward.saved_other_bytes();
        memory_add(other);
        let mut saved = other;
        let mut versions = SmallVec::new();
        backward.visit_saved(&mut |t| {
            let s = t.storage();
            if s.is_activation() {
                memory_add(s.retain_saved());
                if !s.is_pending() {
                    saved += t.nbytes();
                }
            }
            versions.push(versions::saved_version(t, sources, &output));
        });
        versions::push_captured(backward.as_ref(), &mut versions);
        tape.collect();
        for input in &inputs {
            if let Input::Node(n) = input
                && tape.owns(*n)
                && let Some(e) = tape.entries.get_mut(n.index as usize)
                && !e.freed
            {
                e.refs += 1;
            }
        }
        tape.entries.push(Entry {
            op,
            inputs,
            output: std::rc::Rc::downgrade(&output.0),
            out_shape: output.0.shape.clone(),
            backward: Some(backward),
            saved_bytes: saved,
            versions,
            epoch: crate::storage::inplace_epoch(),
            grad: None,
            freed: false,
            refs: 1,
            refill,
        });
        tape.live += 1;
        NodeId {
            tape: tape.id,
            generation: tape.generation,
            index: (tape.entries.len() - 1) as u32,
        }
    });
    output.0.node.set(Some(id));
    output
}

/// Frees every entry of the current tape (forward passes that were never backwarded).
pub fn clear() {
    stack::with_top(|tape| {
        tape.free_all();
        tape.collect();
    });
}
