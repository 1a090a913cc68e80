//! Forward hooks may register and remove hooks, their own included, while they run; each call
//! runs the hooks registered when it began (PyTorch 2.15's order, from
//! `scripts/checkpoint_bodies_reference.py`).

use rewind::nn::{HookHandle, LayerNorm, Module};
use rewind::{DType, Tensor};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

fn fixture_log(key: &str) -> Vec<String> {
    let f: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/checkpoint_bodies.json")).unwrap();
    f[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

type Log = Rc<RefCell<Vec<String>>>;

fn note(log: &Log, s: &str) {
    log.borrow_mut().push(s.to_string());
}

fn two_calls(m: &LayerNorm, log: &Log) {
    let x = Tensor::zeros(&[1, 2], DType::F32).unwrap();
    for _ in 0..2 {
        m.forward(&x).unwrap();
        note(log, "|");
    }
}

#[test]
fn a_hook_may_remove_itself_and_add_another_while_it_runs() {
    // h1 removes itself (runs once); h2 registers h3 (first runs on the next call).
    let m = Rc::new(LayerNorm::new(2).unwrap());
    let log: Log = Rc::default();
    let h1: Rc<Cell<Option<HookHandle>>> = Rc::default();
    let (m1, l1, me) = (Rc::downgrade(&m), log.clone(), h1.clone());
    h1.set(Some(m.hooks.register(move |_| {
        note(&l1, "h1");
        if let (Some(m), Some(h)) = (m1.upgrade(), me.get()) {
            assert!(m.hooks.remove(h));
        }
        Ok(())
    })));
    let (m2, l2) = (Rc::downgrade(&m), log.clone());
    m.hooks.register(move |_| {
        note(&l2, "h2");
        if let Some(m) = m2.upgrade() {
            let l3 = l2.clone();
            m.hooks.register(move |_| {
                note(&l3, "h3");
                Ok(())
            });
        }
        Ok(())
    });
    two_calls(&m, &log);
    // h2 registers another h3 on each call: the second call's runs from the third call on.
    assert_eq!(*log.borrow(), fixture_log("hooks_self_removing_and_adding"));
}

#[test]
fn a_hook_removed_during_a_call_still_runs_in_that_call() {
    let m = Rc::new(LayerNorm::new(2).unwrap());
    let log: Log = Rc::default();
    let b: Rc<Cell<Option<HookHandle>>> = Rc::default();
    let (ma, la, hb) = (Rc::downgrade(&m), log.clone(), b.clone());
    m.hooks.register(move |_| {
        note(&la, "a");
        if let (Some(m), Some(h)) = (ma.upgrade(), hb.get()) {
            m.hooks.remove(h);
        }
        Ok(())
    });
    let lb = log.clone();
    b.set(Some(m.hooks.register(move |_| {
        note(&lb, "b");
        Ok(())
    })));
    two_calls(&m, &log);
    assert_eq!(*log.borrow(), fixture_log("hooks_removing_a_later_hook"));
}
