//! Reachability: which trainable leaves a backward from a tensor would reach.

use super::graph::Input;
use super::stack::with_tape;
use crate::tensor::Tensor;

/// Every leaf that requires grad and that backward from `t` would reach, including the
/// parameters captured by reentrant checkpoint segments on the way.
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
        if !tape.owns(root) || root.index as usize >= tape.entries.len() {
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
                    Input::Node(id) if tape.owns(*id) => reach[id.index as usize] = true,
                    _ => {}
                }
            }
        }
    });
    leaves
}
