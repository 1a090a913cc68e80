//! One tape's graph: its entries (one per recorded op) and how they are freed. An entry is
//! freed — its saved tensors released — when backward has used it, or as soon as nothing can
//! reach it any more (its output's handles and every later entry using it are gone), as
//! PyTorch frees a graph when its last output dies.

use super::accounting::{memory_sub, release};
use super::backward::{Backward, Refill};
use super::versions::SavedVersion;
use crate::ops::spec::OpSpec;
use crate::shape::Shape;
use crate::tensor::{NodeId, Tensor, TensorImpl};
use smallvec::SmallVec;
use std::rc::{Rc, Weak};

/// Where an input's gradient goes.
pub(crate) enum Input {
    /// Needs no gradient.
    Const,
    /// Produced by another entry.
    Node(NodeId),
    /// A leaf that requires grad: its gradient accumulates into `.grad`.
    Leaf(Tensor),
}

/// One recorded op.
pub(crate) struct Entry {
    pub op: &'static OpSpec,
    pub inputs: SmallVec<[Input; 2]>,
    pub output: Weak<TensorImpl>,
    pub out_shape: Shape,
    pub backward: Option<Box<dyn Backward>>,
    pub saved_bytes: usize,
    /// The version of each tensor the backward saved, checked before it runs.
    pub versions: SmallVec<[SavedVersion; 2]>,
    /// The thread's in-place change count when recorded (unchanged: no check needed).
    pub epoch: u32,
    pub grad: Option<Tensor>,
    pub freed: bool,
    /// Live references: 1 while the output has a handle, plus one per unfreed entry that takes
    /// it as input. At 0 (and with no gradient pending) nothing can use the entry again, so it
    /// is freed at once.
    pub refs: u32,
    /// The checkpoint segment whose rerun refills what this entry saved, when it was recorded
    /// inside a non-reentrant segment's body.
    pub refill: Option<Rc<dyn Refill>>,
}

/// One tape of the thread's stack: the root tape, or a child pushed for a recomputation or a
/// scratch scope. Node ids name a tape, a generation of it and a slot.
pub(crate) struct Tape {
    pub id: u32,
    pub generation: u32,
    pub entries: Vec<Entry>,
    /// Entries not yet freed.
    pub live: usize,
}

impl Tape {
    pub fn new(id: u32) -> Tape {
        Tape {
            id,
            generation: 0,
            entries: Vec::new(),
            live: 0,
        }
    }

    /// Whether `id` names an entry of this tape's current generation.
    pub fn owns(&self, id: NodeId) -> bool {
        id.tape == self.id && id.generation == self.generation
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
    pub fn unref(&mut self, index: usize, work: &mut SmallVec<[usize; 8]>) {
        let e = &mut self.entries[index];
        if e.freed {
            return;
        }
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 && e.grad.is_none() && e.backward.is_some() {
            self.free_one(index, work);
        }
    }

    /// Drops the reference `index`'s output handle held, freeing what no longer has any.
    pub fn unref_output(&mut self, index: usize) {
        let mut work: SmallVec<[usize; 8]> = SmallVec::new();
        self.unref(index, &mut work);
        while let Some(i) = work.pop() {
            self.unref(i, &mut work);
        }
    }

    /// Frees every entry.
    pub fn free_all(&mut self) {
        for i in 0..self.entries.len() {
            self.free(i);
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
    bw.visit_saved(&mut |t| release(t));
    memory_sub(bw.saved_other_bytes());
}
