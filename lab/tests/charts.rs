//! `rewind bench`'s charts, drawn by `plotters`: each parses as SVG, labels every point with
//! its plan, names every series, and draws the √L prediction in MiB like the axis it is on.

mod svg;

use rewind_lab::bench::checkpoint::{SweepRow, csv, plots, rows_from_csv};

fn row(depth: usize, plan: &str, secs: f64, mib: f64) -> SweepRow {
    let bytes = (mib * (1 << 20) as f64) as usize;
    SweepRow {
        depth,
        plan: plan.to_string(),
        segmentation: String::new(),
        step_secs: secs,
        step_range: (secs, secs),
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

#[test]
fn labels_of_points_that_nearly_coincide_do_not_overlap() {
    // L = 16 as measured: ops/2 and budget/2 land within a few pixels of each other.
    let rows = vec![
        row(16, "store", 1.523, 286.0),
        row(16, "every", 2.062, 46.0),
        row(16, "sqrt", 1.561, 76.0),
        row(16, "every+dots", 1.294, 166.0),
        row(16, "budget/2", 1.531, 142.0),
        row(16, "budget/4", 1.715, 70.0),
        row(16, "ops/2", 1.422, 142.0),
        row(16, "ops/4", 1.352, 70.0),
    ];
    let (tradeoff, _) = plots(&rows, 16).unwrap();
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tradeoff.svg"),
        &tradeoff,
    )
    .unwrap();
    let doc = roxmltree::Document::parse(&tradeoff).unwrap();
    let labels: Vec<(f64, f64, usize)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter(|n| {
            rows.iter()
                .any(|r| n.text().map(str::trim) == Some(r.plan.as_str()))
        })
        .map(|n| {
            let num = |a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
            (num("x"), num("y"), n.text().unwrap().trim().chars().count())
        })
        .collect();
    assert_eq!(labels.len(), rows.len());
    for (i, a) in labels.iter().enumerate() {
        for b in &labels[i + 1..] {
            // Labels are drawn ≈ 10.5 px high from their y: ≈ 6 px a character, 11 px a line.
            let apart = a.0 + 6.0 * a.2 as f64 <= b.0
                || b.0 + 6.0 * b.2 as f64 <= a.0
                || (a.1 - b.1).abs() >= 11.0;
            assert!(apart, "labels overlap: {a:?} and {b:?}");
        }
    }
}

#[test]
fn a_bench_csv_reads_back_into_the_rows_it_was_written_from() {
    let mut rows = vec![row(4, "store", 0.3, 70.0), row(16, "ops/2", 1.4, 142.0)];
    rows[0].step_range = (0.25, 0.5);
    let back = rows_from_csv(&csv(&rows)).unwrap();
    assert_eq!(back.len(), 2);
    for (a, b) in rows.iter().zip(&back) {
        assert_eq!(
            (a.depth, &a.plan, a.peak_saved),
            (b.depth, &b.plan, b.peak_saved)
        );
        assert_eq!(a.predicted_peak, b.predicted_peak);
        assert!((a.step_secs - b.step_secs).abs() < 1e-6);
    }
    assert!(rows_from_csv("header\n1,2,3\n").is_err());
    // The ranges survive; docs/bench.csv (one run, with ranges) reads back whole, and a CSV
    // from before ranges existed still reads, each range its median.
    assert_eq!(back[0].step_range, rows[0].step_range);
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/bench.csv")).unwrap();
    let docs = rows_from_csv(&docs).unwrap();
    assert_eq!(docs.len(), 40);
    assert!(
        docs.iter()
            .all(|r| r.step_range.0 <= r.step_secs && r.step_secs <= r.step_range.1)
    );
    let old = "depth,plan,step_secs,forward_saved_bytes,peak_saved_bytes,predicted_peak_bytes,\
               peak_heap_bytes,recomputed_blocks,budget_bytes,segments\n\
               4,store,0.299844,73400320,73400320,73400320,98761202,0,,\"[0..4]s\"\n";
    let old = rows_from_csv(old).unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].step_range, (0.299844, 0.299844));
    assert_eq!(old[0].peak_saved, 73400320);
}
