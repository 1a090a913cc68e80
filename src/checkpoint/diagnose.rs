//! Which trainable parameters will get no gradient, and which segment cut them off.
//! A reentrant segment none of whose explicit inputs requires grad cuts its output from the
//! graph (PyTorch's rule); the parameters its body captured then never train. The tensors
//! computed from a cut output carry the cut, so [`diagnose`] can warn before a step and
//! `backward()` can explain its error.

use crate::cuts;
use crate::tensor::Tensor;

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
    let cuts = loss.cuts();
    params
        .iter()
        .filter(|(_, p)| p.requires_grad() && !reached.iter().any(|r| r.same_handle(p)))
        .map(
            |(name, p)| match cuts.iter().rev().find(|c| Tensor::cut_holds(c, p)) {
                Some(cut) => Finding {
                    param: name.clone(),
                    segment: Some(cut.segment.clone()),
                    reason: cuts::why(cut),
                },
                None => Finding {
                    param: name.clone(),
                    segment: None,
                    reason: "not used by the graph of the loss".to_string(),
                },
            },
        )
        .collect()
}
