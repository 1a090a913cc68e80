//! Where a reentrant checkpoint segment cut the graph. A reentrant segment none of whose
//! explicit inputs requires grad returns an output with no grad path (PyTorch's rule); the
//! parameters its body captured then never train. The cut is carried by the tensors computed
//! from that output, so `backward()` on a loss can say which segments cut its path, and a cut
//! from some other forward can never explain it. Cuts hold parameters weakly: a cut keeps no
//! parameter alive. This module knows no tensor type: [`crate::tensor`] carries the cuts.

use std::rc::{Rc, Weak};

/// A reentrant segment that cut its output from the graph; `P` is the tensor type.
#[derive(Debug)]
pub(crate) struct Cut<P> {
    /// The segment's name.
    pub segment: String,
    /// Trainable parameters its body captured (they get no gradient through it), held weakly.
    pub params: Vec<Weak<P>>,
}

impl<P> Cut<P> {
    /// True when the parameter at `p` is one this cut left without a gradient.
    pub fn holds(&self, p: *const P) -> bool {
        self.params.iter().any(|w| std::ptr::eq(w.as_ptr(), p))
    }
}

/// The cuts upstream of a tensor, oldest first.
pub(crate) type Cuts<P> = Rc<[Rc<Cut<P>>]>;

/// At most this many cuts are carried (the newest are kept).
const MAX_CUTS: usize = 1024;

/// The cuts of `a` followed by those of `b` that `a` lacks (`a` itself when `b` adds none).
pub(crate) fn union<P>(a: Cuts<P>, b: &Cuts<P>) -> Cuts<P> {
    if Rc::ptr_eq(&a, b) || b.iter().all(|c| a.iter().any(|u| Rc::ptr_eq(u, c))) {
        return a;
    }
    let mut all: Vec<Rc<Cut<P>>> = a.to_vec();
    all.extend(
        b.iter()
            .filter(|c| !a.iter().any(|u| Rc::ptr_eq(u, c)))
            .cloned(),
    );
    newest(all)
}

/// `upstream` followed by a new cut by `segment` of the parameters `params`.
pub(crate) fn push<P>(upstream: Option<Cuts<P>>, segment: &str, params: Vec<Weak<P>>) -> Cuts<P> {
    let mut all: Vec<Rc<Cut<P>>> = upstream.map(|c| c.to_vec()).unwrap_or_default();
    all.push(Rc::new(Cut {
        segment: segment.to_string(),
        params,
    }));
    newest(all)
}

fn newest<P>(mut all: Vec<Rc<Cut<P>>>) -> Cuts<P> {
    if all.len() > MAX_CUTS {
        all.drain(..all.len() - MAX_CUTS);
    }
    all.into()
}

/// Why `cut` leaves its parameters without gradients, and how to fix it.
pub(crate) fn why<P>(cut: &Cut<P>) -> String {
    let n = cut.params.len();
    format!(
        "reentrant segment `{}` has no input that requires grad; its {n} trainable parameter tensor{} {} captured by the body and reentrant segments ignore them; fix: enable_input_require_grads() on the input embeddings, or CheckpointMode::NonReentrant",
        cut.segment,
        if n == 1 { "" } else { "s" },
        if n == 1 { "is" } else { "are" },
    )
}

/// The explanation attached to `backward()`'s "does not require grad" error.
pub(crate) fn explain<P>(cuts: &[Rc<Cut<P>>]) -> Option<String> {
    let with_params: Vec<&Cut<P>> = cuts
        .iter()
        .map(|c| c.as_ref())
        .filter(|c| !c.params.is_empty())
        .collect();
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

#[cfg(test)]
mod tests {
    use crate::checkpoint::{CheckpointMode, checkpoint};
    use crate::{DType, Tensor};
    use std::rc::Rc;

    fn cut_output(w: &Tensor) -> Tensor {
        let x = Tensor::ones(&[2, 3], DType::F32).unwrap();
        let body_w = w.clone();
        let body = Rc::new(move |xs: &[Tensor]| xs[0].mul(&body_w));
        let out = checkpoint("blocks.0", CheckpointMode::Reentrant, &[&x], body).unwrap();
        crate::warnings::take();
        out
    }

    #[test]
    fn a_cut_explains_the_loss_computed_from_it() {
        let w = Tensor::ones(&[2, 3], DType::F32)
            .unwrap()
            .requires_grad_(true)
            .unwrap();
        let loss = cut_output(&w).sum().unwrap();
        let err = loss.backward().unwrap_err();
        let why = err.explain().expect("the cut is explained");
        assert!(why.contains("reentrant segment `blocks.0`"), "{why}");
        assert!(
            why.contains("its 1 trainable parameter tensor is captured"),
            "{why}"
        );
    }

    #[test]
    fn a_cut_from_another_forward_never_explains_an_unrelated_error() {
        let w = Tensor::ones(&[2, 3], DType::F32)
            .unwrap()
            .requires_grad_(true)
            .unwrap();
        let _never_backwarded = cut_output(&w);
        let unrelated = Tensor::ones(&[3], DType::F32).unwrap().sum().unwrap();
        let err = unrelated.backward().unwrap_err();
        assert_eq!(err.explain(), None, "{err:#}");
    }

    #[test]
    fn a_cut_keeps_no_parameter_alive() {
        let w = Tensor::ones(&[2, 3], DType::F32)
            .unwrap()
            .requires_grad_(true)
            .unwrap();
        let out = cut_output(&w);
        assert_eq!(out.cuts().len(), 1);
        assert_eq!(
            Rc::strong_count(&w.0),
            1,
            "only the caller's handle holds w"
        );
        let weak = Rc::downgrade(&w.0);
        drop(w);
        assert!(weak.upgrade().is_none(), "w was freed while the cut lives");
        // The explanation still counts the parameter the cut left without a gradient.
        let err = out.sum().unwrap().backward().unwrap_err();
        assert!(
            err.explain()
                .unwrap()
                .contains("1 trainable parameter tensor")
        );
    }
}
