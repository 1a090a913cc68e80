//! Which trainable parameters will get no gradient, and which segment cut them off.
//! A reentrant segment none of whose explicit inputs requires grad cuts its output from the
//! graph (PyTorch's rule); the parameters its body captured then never train. rewind records
//! each such cut so `backward()` can explain its error and [`diagnose`] can warn before a step.

use crate::tensor::Tensor;
use std::cell::RefCell;

/// A reentrant segment that cut its output from the graph.
#[derive(Debug, Clone)]
pub struct Cut {
    /// The segment's name.
    pub segment: String,
    /// Trainable parameters its body captured (they will get no gradient through it).
    pub params: Vec<Tensor>,
}

const MAX_CUTS: usize = 1024;

thread_local! {
    static CUTS: RefCell<Vec<Cut>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn record_cut(segment: &str, params: Vec<Tensor>) {
    CUTS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() == MAX_CUTS {
            c.remove(0);
        }
        c.push(Cut {
            segment: segment.to_string(),
            params,
        });
    });
}

/// The cuts recorded since the last backward, removed from the record.
pub(crate) fn take_cuts() -> Vec<Cut> {
    CUTS.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

fn cuts() -> Vec<Cut> {
    CUTS.with(|c| c.borrow().clone())
}

fn why(cut: &Cut) -> String {
    format!(
        "reentrant segment `{}` has no input that requires grad; its {} trainable parameter{} {} captured by the body and reentrant segments ignore them; fix: enable_input_require_grads() on the input embeddings, or CheckpointMode::NonReentrant",
        cut.segment,
        cut.params.len(),
        if cut.params.len() == 1 { "" } else { "s" },
        if cut.params.len() == 1 { "is" } else { "are" },
    )
}

/// The explanation attached to `backward()`'s "does not require grad" error.
pub(crate) fn explain(cuts: &[Cut]) -> Option<String> {
    let with_params: Vec<&Cut> = cuts.iter().filter(|c| !c.params.is_empty()).collect();
    if with_params.is_empty() {
        return None;
    }
    let mut s = String::from(
        "The loss has no grad path: every path from it to a trainable parameter was cut.\n",
    );
    const SHOWN: usize = 3;
    for c in with_params.iter().take(SHOWN) {
        s.push_str("- ");
        s.push_str(&why(c));
        s.push('\n');
    }
    if with_params.len() > SHOWN {
        let rest: Vec<String> = with_params[SHOWN..]
            .iter()
            .map(|c| format!("`{}`", c.segment))
            .collect();
        s.push_str(&format!(
            "- and {} more segments cut the same way: {}\n",
            rest.len(),
            rest.join(", ")
        ));
    }
    Some(s)
}

/// One trainable parameter that backward from the loss would not reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The parameter's name.
    pub param: String,
    /// The segment that cut its path, when one did.
    pub segment: Option<String>,
    /// Why, and how to fix it.
    pub reason: String,
}

/// Lists every trainable parameter in `params` that backward from `loss` would leave without a
/// gradient, naming the segment that cut its path and why. Call it after the forward, before
/// backward: it is how the silent variant (no error, some blocks never train) is caught.
pub fn diagnose(loss: &Tensor, params: &[(String, Tensor)]) -> Vec<Finding> {
    let reached = crate::tape::reachable_leaves(loss);
    let cuts = cuts();
    params
        .iter()
        .filter(|(_, p)| p.requires_grad() && !reached.iter().any(|r| r.same_handle(p)))
        .map(|(name, p)| {
            match cuts
                .iter()
                .rev()
                .find(|c| c.params.iter().any(|q| q.same_handle(p)))
            {
                Some(cut) => Finding {
                    param: name.clone(),
                    segment: Some(cut.segment.clone()),
                    reason: why(cut),
                },
                None => Finding {
                    param: name.clone(),
                    segment: None,
                    reason: "not used by the graph of the loss".to_string(),
                },
            }
        })
        .collect()
}
