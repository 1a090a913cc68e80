//! `rewind bench`'s charts, drawn by `plotters`: each parses as SVG, labels every point with
//! its plan, names every series, and draws the √L prediction in MiB like the axis it is on.

mod svg;

use rewind_lab::bench::checkpoint::{SweepRow, plots};

fn row(depth: usize, plan: &str, secs: f64, mib: f64) -> SweepRow {
    let bytes = (mib * (1 << 20) as f64) as usize;
    SweepRow {
        depth,
        plan: plan.to_string(),
        segmentation: String::new(),
        step_secs: secs,
        forward_saved: bytes,
        peak_saved: bytes,
        predicted_peak: Some(bytes),
        peak_heap: None,
        recompute: 0,
        budget: None,
    }
}

#[test]
fn bench_charts_label_every_plan_and_series() {
    let mut rows = Vec::new();
    for depth in [4, 8, 16] {
        let l = depth as f64;
        rows.push(row(depth, "store", 0.1 * l, 2.0 * l));
        rows.push(row(depth, "every", 0.13 * l, 0.5 * l));
        rows.push(row(depth, "sqrt", 0.12 * l, 4.0 * l.sqrt()));
    }
    let (tradeoff, by_depth) = plots(&rows, 16).unwrap();

    let texts = svg::svg_texts(&tradeoff);
    for plan in ["store", "every", "sqrt"] {
        assert!(
            texts.iter().any(|t| t == plan),
            "point {plan} unlabelled: {texts:?}"
        );
    }
    assert!(texts.iter().any(|t| t == "median step time (s)"));
    assert!(texts.iter().any(|t| t == "peak saved activations (MiB)"));
    // Ticks are plain numbers: no `1242.000`.
    assert!(!texts.iter().any(|t| t.ends_with(".000")), "{texts:?}");

    let texts = svg::svg_texts(&by_depth);
    for series in ["store", "every", "sqrt"] {
        assert!(
            texts.iter().any(|t| t == series),
            "series {series} missing: {texts:?}"
        );
    }
    // 2√L × (store MiB per block = 2.0): the prediction is in MiB, like the axis.
    assert!(
        texts.iter().any(|t| t == "2√L × 2.0 MiB (√L theory)"),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t == "depth L (blocks)"));
}
