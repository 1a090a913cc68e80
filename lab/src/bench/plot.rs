//! Minimal SVG charts (scatter and line series with labelled axes) for `rewind bench`.

use std::fmt::Write as _;

/// One named series of points, drawn as markers, or as a line when `line` is set.
pub struct Series {
    /// Legend label.
    pub name: String,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
    /// Join the points with a line.
    pub line: bool,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// An SVG chart of `series`; `log_x` puts x on a log₂ scale.
pub fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series], log_x: bool) -> String {
    let (w, h, m) = (640.0, 420.0, 60.0);
    let tx = |x: f64| if log_x { x.max(1e-12).log2() } else { x };
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(tx(x));
        x1 = x1.max(tx(x));
        y1 = y1.max(y);
    }
    if x0 >= x1 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.08 };
    let px = |x: f64| m + (tx(x) - x0) / (x1 - x0) * (w - 2.0 * m);
    let py = |y: f64| h - m - y / y1 * (h - 2.0 * m);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="24" text-anchor="middle" font-size="15">{title}</text>"#,
        w / 2.0
    );
    let _ = write!(
        s,
        r#"<line x1="{m}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{}" stroke="black"/>"#,
        h - m,
        w - m,
        h - m,
        h - m
    );
    for i in 0..=4 {
        let (xv, yv) = (x0 + (x1 - x0) * i as f64 / 4.0, y1 * i as f64 / 4.0);
        let xs = if log_x {
            format!("{:.0}", 2f64.powf(xv))
        } else {
            format!("{xv:.2}")
        };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{xs}</text>"#,
            m + (w - 2.0 * m) * i as f64 / 4.0,
            h - m + 16.0
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{:.3}</text>"#,
            m - 4.0,
            py(yv) + 4.0,
            yv
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#,
        w / 2.0,
        h - 18.0
    );
    let _ = write!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{y_label}</text>"#,
        h / 2.0,
        h / 2.0
    );
    for (k, se) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        if se.line && se.points.len() > 1 {
            let path: Vec<String> = se
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
        }
        for &(x, y) in &se.points {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{c}"/>"#,
                px(x),
                py(y)
            );
        }
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            w - m - 150.0,
            m + 16.0 * k as f64,
            w - m - 135.0,
            m + 9.0 + 16.0 * k as f64,
            se.name
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One panel of horizontal bars: a title and (label, value) pairs.
pub struct BarPanel {
    /// Panel title (with its unit).
    pub title: String,
    /// One bar per label.
    pub bars: Vec<(String, f64)>,
}

/// An SVG of `panels` side by side, each with its own scale; labels on the left of the first.
pub fn bar_panels(title: &str, panels: &[BarPanel]) -> String {
    let rows = panels.iter().map(|p| p.bars.len()).max().unwrap_or(0);
    let (label_w, panel_w, bar_h, top) = (150.0, 220.0, 22.0, 56.0);
    let w = label_w + panel_w * panels.len() as f64 + 20.0;
    let h = top + bar_h * rows as f64 + 20.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{title}</text>"#,
        w / 2.0
    );
    if let Some(first) = panels.first() {
        for (i, (label, _)) in first.bars.iter().enumerate() {
            let _ = write!(
                s,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#,
                label_w - 8.0,
                top + bar_h * i as f64 + 15.0
            );
        }
    }
    for (k, p) in panels.iter().enumerate() {
        let x0 = label_w + panel_w * k as f64;
        let max = p.bars.iter().map(|b| b.1).fold(0.0f64, f64::max);
        let scale = if max > 0.0 {
            (panel_w - 70.0) / max
        } else {
            0.0
        };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="44" text-anchor="middle">{}</text>"#,
            x0 + (panel_w - 20.0) / 2.0,
            p.title
        );
        for (i, (_, v)) in p.bars.iter().enumerate() {
            let y = top + bar_h * i as f64;
            let len = (v * scale).max(0.0);
            let _ = write!(
                s,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{len:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                y + 3.0,
                bar_h - 6.0,
                COLORS[k % COLORS.len()],
                x0 + len + 4.0,
                y + 15.0,
                short(*v)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
