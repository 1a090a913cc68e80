//! The rerun: a segment's body run again on a child tape to refill what its forward packed
//! or evicted, then checked against the forward as PyTorch checks it.

use super::context::{REFILLED, RefillGuard, Refilling, meta_text};
use super::segment::Recording;
use crate::error::{Error, Result};
use crate::tape::backward::Refill;
use crate::tape::child::ChildTape;
use crate::tape::stack;

impl Refill for Recording {
    fn refill(&self) -> Result<()> {
        if self.recount() == 0 {
            return Ok(());
        }
        let Some(body) = &self.body else {
            return Err(Error::Checkpoint(format!(
                "segment `{}` has no body to recompute",
                self.name
            )));
        };
        if let Some(outer) = &self.enclosing {
            outer.refill()?;
        }
        let Some(me) = self.me.upgrade() else {
            return Ok(()); // being dropped: nothing holds its placeholders any more
        };
        REFILLED.with(|r| r.borrow_mut().push(self.me.clone()));
        let (limit, forward_saves) = {
            let st = self.st.borrow();
            let limit = if st.backward_inside {
                st.saves.len()
            } else {
                usize::MAX
            };
            (limit, st.saves.len())
        };
        let child = ChildTape::push();
        let guard = RefillGuard::push(Refilling {
            seg: me,
            tape: stack::top_id(),
            next_slot: 0,
            next_save: 0,
            limit,
            stopped: false,
            error: None,
            mismatched: Vec::new(),
        });
        let ran = body.rerun();
        let r = guard.finish();
        drop(child);
        let Some(r) = r else {
            return Err(Error::Checkpoint(
                "the recomputation's context was lost".into(),
            ));
        };
        ran.and_then(|()| self.check_rerun(r, forward_saves))
            .map_err(|e| match e {
                Error::Checkpoint(msg) => {
                    Error::Checkpoint(format!("segment `{}`: {msg}", self.name))
                }
                other => other,
            })
    }
}

impl Recording {
    /// Whether the rerun saved what the forward saved (PyTorch's checks) and refilled it all.
    fn check_rerun(&self, r: Refilling, forward_saves: usize) -> Result<()> {
        if !r.mismatched.is_empty() {
            let mut msg = String::from(
                "torch.utils.checkpoint: Recomputed values for the following tensors have different metadata than during the forward pass.\n",
            );
            for (k, a, b) in &r.mismatched {
                msg += &format!(
                    "tensor at position {k}:\nsaved metadata: {}\nrecomputed metadata: {}\n",
                    meta_text(a),
                    meta_text(b)
                );
            }
            msg.push('.');
            return Err(Error::Checkpoint(msg));
        }
        if let Some(e) = r.error {
            return Err(e);
        }
        if self.st.borrow().missing > 0 || !r.stopped && r.next_save != forward_saves {
            return Err(self.count_error(forward_saves, r.next_save));
        }
        Ok(())
    }
}
