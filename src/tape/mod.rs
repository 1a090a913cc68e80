//! The tape: an append-only list of recorded ops (a Wengert list), one per thread, with child
//! tapes stacked on top for checkpoint recomputation.
//!
//! Entries are appended in execution order, so the list already is a topological order and
//! backward is a single reverse sweep ([`crate::autograd`]). Each entry names its op, its
//! inputs, its output and exactly what its backward saved; the bytes saved are accounted for
//! as entries are pushed and freed.

use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::{NodeId, Tensor, TensorImpl};
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::rc::Weak;

pub(crate) mod evict;
mod grad_mode;
mod inspect;

pub use grad_mode::{EnableGradGuard, NoGradGuard, is_grad_enabled, no_grad};
pub use inspect::{EntryInfo, dump, entries, live_entries};

/// Gradients for an op's inputs, in input order (`None` where not needed).
pub type Grads = SmallVec<[Option<Tensor>; 2]>;

/// The backward half of an op, holding exactly what its forward saved. What it saves is stated
/// by two required methods, so no op can leave its memory out of the tape's accounting.
pub trait Backward {
    /// Given dL/d(output), returns dL/d(input) for every input whose `needs` flag is set.
    fn backward(&self, grad: &Tensor, needs: &[bool]) -> Result<Grads>;
    /// Calls `f` on every tensor saved for backward: the tape counts their bytes, dumps them
    /// and checks a recomputation against them.
    fn visit_saved(&self, f: &mut dyn FnMut(&Tensor));
    /// Bytes of saved state that is not a tensor (argmax positions, token ids, masks).
    fn saved_other_bytes(&self) -> usize;
    /// Leaves that get gradients through this op without being its inputs (the parameters a
    /// checkpoint segment's body captures).
    fn captured(&self) -> &[Tensor] {
        &[]
    }
}

/// Where an input's gradient goes.
pub(crate) enum Input {
    /// Needs no gradient.
    Const,
    /// Produced by another entry.
    Node(NodeId),
    /// A leaf that requires grad: its gradient accumulates into `.grad`.
    Leaf(Tensor),
}

pub(crate) struct Entry {
    pub op: &'static str,
    pub inputs: SmallVec<[Input; 2]>,
    pub output: Weak<TensorImpl>,
    pub out_shape: Shape,
    pub backward: Option<Box<dyn Backward>>,
    pub saved_bytes: usize,
    /// The version of each tensor the backward saved, checked before it runs.
    pub versions: SmallVec<[crate::inplace::SavedVersion; 2]>,
    /// The thread's in-place change count when recorded (unchanged: no check needed).
    pub epoch: u32,
    pub grad: Option<Tensor>,
    pub freed: bool,
    /// Live references: 1 while the output has a handle, plus one per unfreed entry that takes
    /// it as input. At 0 (and with no gradient pending) nothing can use the entry again, so it
    /// is freed at once, as PyTorch frees a graph when its last output dies.
    pub refs: u32,
    /// The rerun that refills what a selective checkpoint segment evicted from this entry's
    /// saved tensors (entries recorded inside such a segment's body).
    pub refill: Option<std::rc::Rc<dyn evict::Refill>>,
}

/// One tape of the thread's stack.
pub(crate) struct Tape {
    pub id: u32,
    pub generation: u32,
    pub entries: Vec<Entry>,
    live: usize,
    /// What the tape is for: whether it records, and whether it lists what ops save.
    kind: ChildKind,
    /// What every op saved, for [`ChildKind::Probe`] and [`ChildKind::RecordAndList`].
    meta: Vec<SavedMeta>,
    /// Leaves that require grad used by ops on a probe tape (parameters a body captures).
    touched: Vec<Tensor>,
}

/// Shape and dtype of one tensor an op saved for backward.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedMeta {
    /// The op that saved it.
    pub op: &'static str,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its dtype.
    pub dtype: crate::dtype::DType,
}

/// What a tape on the stack is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildKind {
    /// Records as usual (the root tape, a reentrant recomputation, a [`scratch`] scope).
    Record,
    /// Records, and lists what every op saved (a non-reentrant recomputation, checked against
    /// the list its forward made).
    RecordAndList,
    /// Records nothing: ops only learn whether their output requires grad, and the tape lists
    /// what they would save and which trainable leaves they use (a segment's forward).
    Probe,
}

/// What a child tape learned while it was on the stack.
pub(crate) struct ChildReport {
    pub meta: Vec<SavedMeta>,
    pub touched: Vec<Tensor>,
}

impl Tape {
    fn new(id: u32) -> Tape {
        Tape {
            id,
            generation: 0,
            entries: Vec::new(),
            live: 0,
            kind: ChildKind::Record,
            meta: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// Frees entry `index`: drops what its backward saved, marks it used and releases its
    /// references to its inputs, freeing those nothing else can reach.
    pub fn free(&mut self, index: usize) {
        let mut work: SmallVec<[usize; 8]> = SmallVec::new();
        self.free_one(index, &mut work);
        while let Some(i) = work.pop() {
            self.unref(i, &mut work);
        }
    }

    fn free_one(&mut self, index: usize, work: &mut SmallVec<[usize; 8]>) {
        let (id, generation) = (self.id, self.generation);
        let e = &mut self.entries[index];
        if e.freed {
            return;
        }
        if let Some(bw) = e.backward.take() {
            release_saved(bw.as_ref());
        }
        e.refill = None;
        for input in e.inputs.drain(..) {
            if let Input::Node(n) = input
                && n.tape == id
                && n.generation == generation
            {
                work.push(n.index as usize);
            }
        }
        e.grad = None;
        e.freed = true;
        self.live -= 1;
    }

    /// Drops one reference to entry `index`; frees it when none is left and no gradient waits
    /// for it (an entry whose backward is running has none to free).
    fn unref(&mut self, index: usize, work: &mut SmallVec<[usize; 8]>) {
        let e = &mut self.entries[index];
        if e.freed {
            return;
        }
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 && e.grad.is_none() && e.backward.is_some() {
            self.free_one(index, work);
        }
    }

    /// Starts a new generation when nothing on the tape is live (old node ids go stale).
    pub fn collect(&mut self) {
        if self.live == 0 && !self.entries.is_empty() {
            self.entries.clear();
            self.generation = self.generation.wrapping_add(1);
        }
    }
}

fn release_saved(bw: &dyn Backward) {
    bw.visit_saved(&mut |t| {
        if t.storage().is_activation() {
            memory_sub(t.storage().release_saved());
        }
    });
    memory_sub(bw.saved_other_bytes());
}

struct Stack {
    tapes: Vec<Tape>,
    next_id: u32,
}

thread_local! {
    static STACK: RefCell<Stack> = RefCell::new(Stack { tapes: vec![Tape::new(0)], next_id: 1 });
    static SAVED_NOW: Cell<usize> = const { Cell::new(0) };
    static SAVED_PEAK: Cell<usize> = const { Cell::new(0) };
    /// Outputs dropped while the stack was borrowed, released once it is free again.
    static DROPPED: RefCell<Vec<NodeId>> = const { RefCell::new(Vec::new()) };
    /// Whether `DROPPED` holds anything (checked on every op, so a plain flag).
    static PENDING: Cell<bool> = const { Cell::new(false) };
}

/// The last handle to an op's output is gone: its entry loses the reference the handle held,
/// at once when the stack is free, else when its holder lets go of it.
impl Drop for TensorImpl {
    fn drop(&mut self) {
        let Some(id) = self.node.get() else { return };
        if id.index == u32::MAX {
            return;
        }
        let _ = STACK.try_with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                s.unref_output(id);
                drop(s);
                release_dropped();
            }
            Err(_) => {
                let _ = DROPPED.try_with(|d| d.borrow_mut().push(id));
                PENDING.with(|p| p.set(true));
            }
        });
    }
}

impl Stack {
    /// Drops the reference `id`'s output handle held (nothing when its tape or generation is
    /// gone), freeing what no longer has any.
    fn unref_output(&mut self, id: NodeId) {
        if let Some(tape) = self.tapes.iter_mut().rev().find(|t| t.id == id.tape)
            && tape.generation == id.generation
        {
            let mut work: SmallVec<[usize; 8]> = SmallVec::new();
            tape.unref(id.index as usize, &mut work);
            while let Some(i) = work.pop() {
                tape.unref(i, &mut work);
            }
        }
    }
}

/// Releases the outputs dropped while the stack was borrowed (a no-op unless there are any).
#[inline]
fn release_dropped() {
    if PENDING.with(|p| p.get()) {
        release_pending();
    }
}

#[cold]
fn release_pending() {
    let _ = STACK.try_with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return;
        };
        PENDING.with(|p| p.set(false));
        // Freeing may drop more outputs; they join the list and this loop takes them too.
        while let Some(id) = DROPPED.try_with(|d| d.borrow_mut().pop()).ok().flatten() {
            s.unref_output(id);
        }
    });
}

/// Runs `f` on the tape with id `id`; a tape no longer on the stack means its graph is gone.
pub(crate) fn with_tape<R>(id: u32, f: impl FnOnce(&mut Tape) -> R) -> Result<R> {
    let r = STACK.with(|s| {
        let mut s = s.borrow_mut();
        let tape = s
            .tapes
            .iter_mut()
            .rev()
            .find(|t| t.id == id)
            .ok_or(Error::GraphFreed)?;
        Ok(f(tape))
    });
    release_dropped();
    r
}

/// Pushes a fresh child tape of `kind`; ops record there until [`pop_child_tape`].
pub(crate) fn push_child_tape(kind: ChildKind) -> u32 {
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        let id = s.next_id;
        s.next_id += 1;
        let mut tape = Tape::new(id);
        tape.kind = kind;
        s.tapes.push(tape);
        id
    })
}

/// Runs `f` on a fresh child tape and frees everything recorded there when `f` returns (or
/// panics): a scope for a forward that is measured but never backwarded, such as the planner's
/// probe of a model's blocks. Values `f` returns stay valid; backward through them fails with
/// [`Error::GraphFreed`].
pub fn scratch<R>(f: impl FnOnce() -> R) -> R {
    struct Pop(u32);
    impl Drop for Pop {
        fn drop(&mut self) {
            pop_child_tape(self.0);
        }
    }
    let _pop = Pop(push_child_tape(ChildKind::Record));
    f()
}

/// Pops the child tape `id` (which must be on top), freeing everything it still holds.
pub(crate) fn pop_child_tape(id: u32) -> ChildReport {
    let tape = STACK.with(|s| {
        let mut s = s.borrow_mut();
        match s.tapes.last() {
            Some(t) if t.id == id && s.tapes.len() > 1 => s.tapes.pop(),
            _ => None,
        }
    });
    let Some(mut tape) = tape else {
        return ChildReport {
            meta: Vec::new(),
            touched: Vec::new(),
        };
    };
    for i in 0..tape.entries.len() {
        tape.free(i);
    }
    release_dropped();
    ChildReport {
        meta: std::mem::take(&mut tape.meta),
        touched: std::mem::take(&mut tape.touched),
    }
}

/// What the ops on child tape `id` saved so far.
pub(crate) fn child_meta(id: u32) -> Result<Vec<SavedMeta>> {
    with_tape(id, |t| t.meta.clone())
}

/// Every leaf that requires grad and that backward from `t` would reach, including the
/// parameters captured by checkpoint segments on the way.
pub(crate) fn reachable_leaves(t: &Tensor) -> Vec<Tensor> {
    let mut leaves: Vec<Tensor> = Vec::new();
    let mut add = |l: &Tensor| {
        if !leaves.iter().any(|u| u.same_handle(l)) {
            leaves.push(l.clone());
        }
    };
    let Some(root) = t.node() else {
        if t.requires_grad() {
            add(t);
        }
        return leaves;
    };
    let _ = with_tape(root.tape, |tape| {
        if root.generation != tape.generation || root.index as usize >= tape.entries.len() {
            return;
        }
        let mut reach = vec![false; root.index as usize + 1];
        reach[root.index as usize] = true;
        for i in (0..=root.index as usize).rev() {
            let e = &tape.entries[i];
            if !reach[i] || e.freed {
                continue;
            }
            if let Some(bw) = &e.backward {
                bw.captured().iter().for_each(&mut add);
            }
            for input in &e.inputs {
                match input {
                    Input::Leaf(l) => add(l),
                    Input::Node(id) if id.tape == tape.id && id.generation == tape.generation => {
                        reach[id.index as usize] = true
                    }
                    _ => {}
                }
            }
        }
    });
    leaves
}

pub(crate) fn memory_add(bytes: usize) {
    if bytes > 0 {
        let now = SAVED_NOW.with(|c| {
            let v = c.get() + bytes;
            c.set(v);
            v
        });
        SAVED_PEAK.with(|p| p.set(p.get().max(now)));
    }
}

pub(crate) fn memory_sub(bytes: usize) {
    if bytes > 0 {
        SAVED_NOW.with(|c| c.set(c.get().saturating_sub(bytes)));
    }
}

/// Bytes of activations the thread's tapes currently keep for backward (each storage once).
/// Tensors the caller created (parameters, input batches) are the caller's and not counted.
pub fn saved_bytes() -> usize {
    SAVED_NOW.with(|c| c.get())
}

/// The highest [`saved_bytes`] since the last [`reset_peak_saved_bytes`].
pub fn peak_saved_bytes() -> usize {
    SAVED_PEAK.with(|c| c.get())
}

/// Starts a new peak measurement from the current saved bytes.
pub fn reset_peak_saved_bytes() {
    SAVED_PEAK.with(|p| p.set(saved_bytes()));
}

/// Records an op that produced `output`: when grad mode is on and an input requires grad,
/// appends an entry holding the backward that `make_backward` builds (it receives the output,
/// for ops that save it). Otherwise nothing is recorded and nothing is saved.
pub(crate) fn record<B: Backward + 'static>(
    op: &'static str,
    inputs: &[&Tensor],
    output: Tensor,
    make_backward: impl FnOnce(&Tensor) -> B,
) -> Tensor {
    let needed = is_grad_enabled() && inputs.iter().any(|t| t.requires_grad());
    record_if(needed, op, inputs, output, make_backward)
}

/// [`record`] with the decision made by the caller (a non-reentrant checkpoint segment
/// requires grad when a parameter inside does, even if no input does).
pub(crate) fn record_if<B: Backward + 'static>(
    needed: bool,
    op: &'static str,
    inputs: &[&Tensor],
    mut output: Tensor,
    make_backward: impl FnOnce(&Tensor) -> B,
) -> Tensor {
    if needed && evict::active() {
        evict::on_record(op, inputs, &mut output);
    }
    output.set_cuts(Tensor::merged_cuts(inputs.iter().copied()));
    if !needed {
        return output;
    }
    output.0.requires_grad.set(true);
    let backward: Box<dyn Backward> = Box::new(make_backward(&output));
    let sources = inputs;
    let inputs: SmallVec<[Input; 2]> = inputs
        .iter()
        .map(|t| match (t.requires_grad(), t.node()) {
            (false, _) => Input::Const,
            (true, Some(id)) => Input::Node(id),
            (true, None) => Input::Leaf((*t).clone()),
        })
        .collect();
    let id = STACK.with(|s| {
        let mut s = s.borrow_mut();
        let tape = s.tapes.last_mut().expect("the root tape is never popped");
        if tape.kind != ChildKind::Record {
            backward.visit_saved(&mut |t| {
                tape.meta.push(SavedMeta {
                    op,
                    shape: t.shape().to_vec(),
                    dtype: t.dtype(),
                })
            });
        }
        if tape.kind == ChildKind::Probe {
            for input in &inputs {
                if let Input::Leaf(t) = input
                    && !tape.touched.iter().any(|u| u.same_handle(t))
                {
                    tape.touched.push(t.clone());
                }
            }
            return NodeId {
                tape: tape.id,
                generation: tape.generation,
                index: u32::MAX,
            };
        }
        let other = backward.saved_other_bytes();
        memory_add(other);
        let mut saved = other;
        let mut versions = SmallVec::new();
        backward.visit_saved(&mut |t| {
            if t.storage().is_activation() {
                memory_add(t.storage().retain_saved());
                saved += t.nbytes();
            }
            versions.push(crate::inplace::saved_version(t, sources, &output));
        });
        crate::inplace::push_captured(backward.as_ref(), &mut versions);
        tape.collect();
        for input in &inputs {
            if let Input::Node(n) = input
                && n.tape == tape.id
                && n.generation == tape.generation
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
            refill: None,
        });
        tape.live += 1;
        NodeId {
            tape: tape.id,
            generation: tape.generation,
            index: (tape.entries.len() - 1) as u32,
        }
    });
    output.0.node.set(Some(id));
    release_dropped();
    output
}

/// Frees every entry of the current tape (forward passes that were never backwarded).
pub fn clear() {
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        let tape = s.tapes.last_mut().expect("root tape");
        for i in 0..tape.entries.len() {
            tape.free(i);
        }
        tape.collect();
    });
    release_dropped();
}
