//! The gradient-ready event: a callback once per trainable leaf per backward, the moment its
//! gradient is final — what data parallelism needs to start reducing a bucket while the rest
//! of the backward runs. Before the sweep, each leaf's pending contributions are counted on
//! the entries the roots reach: one per entry that takes it as an input (a tied weight used
//! twice has two) and one per reentrant checkpoint segment that captures it (final when the
//! segment's inner sweep ends: the inner sweep never fires, so a parameter is never "ready"
//! twice, unlike PyTorch DDP's hooks under reentrant checkpointing). An entry counts as done
//! when the sweep finishes it, whether or not a gradient reached each input; leaves still
//! pending when the sweep ends (a branch no gradient reached) fire then.

use crate::tape::graph::{Input, Tape};
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// A callback for [`crate::BackwardOptions::on_grad_ready`]: called with each leaf whose
/// `.grad` is final for this backward.
#[derive(Clone)]
pub struct GradReady(Rc<RefCell<Hook>>);

type Hook = dyn FnMut(&Tensor);

impl GradReady {
    /// Wraps `f`.
    pub fn new(f: impl FnMut(&Tensor) + 'static) -> GradReady {
        GradReady(Rc::new(RefCell::new(f)))
    }

    fn call(&self, leaf: &Tensor) {
        (self.0.borrow_mut())(leaf);
    }
}

impl fmt::Debug for GradReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GradReady(..)")
    }
}

/// One sweep's pending contributions per leaf, in the order leaves were first met.
pub(crate) struct Ready {
    hook: GradReady,
    leaves: Vec<(Tensor, usize)>,
    index: HashMap<*const (), usize>,
    /// Leaves that became ready while the tape was borrowed, fired once it is not.
    due: Vec<Tensor>,
}

fn key(t: &Tensor) -> *const () {
    Rc::as_ptr(&t.0).cast()
}

impl Ready {
    /// Counts, on `tape`, the contributions of every entry reachable from `roots` (indices).
    pub(crate) fn count(hook: GradReady, tape: &Tape, roots: &[usize]) -> Ready {
        let mut r = Ready {
            hook,
            leaves: Vec::new(),
            index: HashMap::new(),
            due: Vec::new(),
        };
        let Some(&top) = roots.iter().max() else {
            return r;
        };
        let mut reach = vec![false; top + 1];
        roots.iter().for_each(|&i| reach[i] = true);
        for i in (0..=top).rev() {
            let e = &tape.entries[i];
            if !reach[i] || e.freed {
                continue;
            }
            if let Some(bw) = &e.backward {
                bw.captured().iter().for_each(|l| r.add(l));
            }
            for input in &e.inputs {
                match input {
                    Input::Leaf(l) => r.add(l),
                    Input::Node(id) if tape.owns(*id) => reach[id.index as usize] = true,
                    _ => {}
                }
            }
        }
        r
    }

    fn add(&mut self, leaf: &Tensor) {
        match self.index.get(&key(leaf)) {
            Some(&i) => self.leaves[i].1 += 1,
            None => {
                self.index.insert(key(leaf), self.leaves.len());
                self.leaves.push((leaf.clone(), 1));
            }
        }
    }

    fn done(&mut self, leaf: &Tensor) {
        if let Some(&i) = self.index.get(&key(leaf)) {
            let (l, n) = &mut self.leaves[i];
            if *n > 0 {
                *n -= 1;
                if *n == 0 {
                    self.due.push(l.clone());
                }
            }
        }
    }

    /// Entry `i` is finished: its leaf inputs and captured leaves have their contribution.
    pub(crate) fn entry_done(&mut self, tape: &Tape, i: usize) {
        let e = &tape.entries[i];
        for input in &e.inputs {
            if let Input::Leaf(l) = input {
                self.done(l);
            }
        }
        if let Some(bw) = &e.backward {
            for l in bw.captured() {
                self.done(l);
            }
        }
    }

    /// Calls the hook for the leaves that became ready (outside any tape borrow).
    pub(crate) fn fire(&mut self) {
        for leaf in std::mem::take(&mut self.due) {
            self.hook.call(&leaf);
        }
    }

    /// The sweep ended: every leaf still pending is final too.
    pub(crate) fn finish(mut self) {
        self.fire();
        for (leaf, n) in &self.leaves {
            if *n > 0 {
                self.hook.call(leaf);
            }
        }
    }

    /// A backward from a leaf itself: its gradient is final at once.
    pub(crate) fn leaf(hook: &GradReady, leaf: &Tensor) {
        hook.call(leaf);
    }
}
