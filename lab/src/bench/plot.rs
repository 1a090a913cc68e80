//! SVG charts through `plotters` (its SVG backend writes `<text>` elements, so no font is
//! needed to build or render): labelled points, line series, and panels of horizontal bars.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rewind::error::{Error, Result};

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::invalid("plot", e.to_string())
}

/// A number for an axis tick: no trailing zeros, at most three significant decimals.
fn tick(v: f64) -> String {
    let s = if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `[0, max]` padded by `pad` (a fraction), never empty.
fn from_zero(max: f64, pad: f64) -> std::ops::Range<f64> {
    let m = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    0.0..m * (1.0 + pad)
}

/// One named point.
pub struct Point {
    /// Its label, drawn beside it.
    pub label: String,
    /// x.
    pub x: f64,
    /// y.
    pub y: f64,
}

/// A scatter chart where every point carries its label (axes from zero).
pub fn labelled_points(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[Point],
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let xmax = points.iter().map(|p| p.x).fold(0.0, f64::max);
        let ymax = points.iter().map(|p| p.y).fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(from_zero(xmax, 0.25), from_zero(ymax, 0.12))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        // Each label goes beside its point where it overlaps no earlier label or marker.
        let at: Vec<(i32, i32)> = points
            .iter()
            .map(|p| chart.backend_coord(&(p.x, p.y)))
            .collect();
        let mut boxes: Vec<(i32, i32, i32, i32)> = at
            .iter()
            .map(|&(x, y)| (x - 6, y - 6, x + 6, y + 6))
            .collect();
        for (i, p) in points.iter().enumerate() {
            let c = color(i);
            let w = (p.label.chars().count() as f64 * 7.5) as i32;
            let (x, y) = at[i];
            let place = |dx: i32, dy: i32| (x + dx, y + dy - 11, x + dx + w, y + dy + 3);
            let overlaps = |b: &(i32, i32, i32, i32)| {
                boxes
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && b.0 < o.2 && o.0 < b.2 && b.1 < o.3 && o.1 < b.3)
            };
            let offsets = [(9, 4), (9, -10), (9, 18), (-w - 9, 4), (9, -24), (9, 32)];
            let (dx, dy) = offsets
                .iter()
                .copied()
                .find(|&(dx, dy)| !overlaps(&place(dx, dy)))
                .unwrap_or(offsets[0]);
            boxes.push(place(dx, dy));
            chart
                .draw_series(std::iter::once(Circle::new((p.x, p.y), 5, c.filled())))
                .map_err(plot_err)?;
            root.draw(&Text::new(
                p.label.clone(),
                (x + dx, y + dy - 11),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A line through round markers (measured points).
    Measured,
    /// A dashed line without markers (a model's prediction).
    Theory,
}

/// One named series.
pub struct Series {
    /// Legend label.
    pub name: String,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
    /// How it is drawn.
    pub mark: Mark,
}

/// A line chart of `series` (axes from zero), with a legend whose symbols match the lines.
pub fn lines(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let all = series.iter().flat_map(|s| s.points.iter());
        let xmax = all.clone().map(|p| p.0).fold(0.0, f64::max);
        let ymax = all.map(|p| p.1).fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(from_zero(xmax, 0.05), from_zero(ymax, 0.08))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            match s.mark {
                Mark::Measured => {
                    chart
                        .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                        .map_err(plot_err)?
                        .label(s.name.as_str())
                        .legend(move |(x, y)| {
                            EmptyElement::at((x + 10, y))
                                + PathElement::new(vec![(-10, 0), (10, 0)], c.stroke_width(2))
                                + Circle::new((0, 0), 4, c.filled())
                        });
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                        .map_err(plot_err)?;
                }
                Mark::Theory => {
                    let c = BLACK;
                    chart
                        .draw_series(DashedLineSeries::new(
                            s.points.iter().copied(),
                            6,
                            4,
                            c.stroke_width(2),
                        ))
                        .map_err(plot_err)?
                        .label(s.name.as_str())
                        .legend(move |(x, y)| {
                            plotters::element::DashedPathElement::new(
                                vec![(x, y), (x + 20, y)],
                                6,
                                4,
                                c.stroke_width(2),
                            )
                        });
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// One panel of horizontal bars.
pub struct BarPanel {
    /// Title, with its unit.
    pub title: String,
    /// One bar per label, top to bottom.
    pub bars: Vec<(String, f64)>,
    /// Zoom the axis onto the values and mark the first bar's value as the baseline (for
    /// figures like a loss, whose differences are small against its size).
    pub zoom_to_baseline: bool,
}

/// Bar panels in a grid of `columns`, each on its own axis, every bar labelled with its value.
pub fn bar_panels(title: &str, panels: &[BarPanel], columns: usize) -> Result<String> {
    let columns = columns.max(1);
    let rows = panels.len().div_ceil(columns).max(1);
    let bars = panels
        .iter()
        .map(|p| p.bars.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let (w, h) = (
        560 * columns as u32,
        (60 + 30 * bars as u32 + 60) * rows as u32 + 40,
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(plot_err)?;
        let areas = root.split_evenly((rows, columns));
        for (k, (panel, area)) in panels.iter().zip(areas.iter()).enumerate() {
            bar_panel(panel, area, color(k))?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn bar_panel(p: &BarPanel, area: &DrawingArea<SVGBackend<'_>, Shift>, c: RGBColor) -> Result<()> {
    let n = p.bars.len();
    let (lo, hi) = p
        .bars
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), b| {
            (lo.min(b.1), hi.max(b.1))
        });
    let baseline = p.bars.first().map(|b| b.1);
    let x_range = if p.zoom_to_baseline && lo.is_finite() && hi.is_finite() {
        let pad = ((hi - lo) * 0.25).max(hi.abs() * 0.002).max(1e-9);
        (lo - pad)..(hi + pad * 2.5)
    } else {
        from_zero(hi, 0.3)
    };
    let x0 = x_range.start;
    let names: Vec<String> = p.bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(150)
        // An integer range is inclusive in plotters: 0..n - 1 gives exactly n rows.
        .build_cartesian_2d(x_range, (0..n.max(1) - 1).into_segmented())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE.mix(0.0))
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            // Labels only for bar rows; any other segment value is left blank.
            SegmentValue::CenterOf(i) => n
                .checked_sub(*i + 1)
                .and_then(|j| names.get(j).cloned())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|v| tick(*v))
        .draw()
        .map_err(plot_err)?;
    for (i, (_, v)) in p.bars.iter().enumerate() {
        let row = n - 1 - i;
        let rect = Rectangle::new(
            [
                (x0, SegmentValue::Exact(row)),
                (*v, SegmentValue::Exact(row + 1)),
            ],
            c.mix(0.85).filled(),
        );
        let mut rect = rect;
        rect.set_margin(4, 4, 0, 0);
        chart.draw_series(std::iter::once(rect)).map_err(plot_err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                tick_value(*v),
                (*v, SegmentValue::CenterOf(row)),
                TextStyle::from(("sans-serif", 12).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )))
            .map_err(plot_err)?;
    }
    if p.zoom_to_baseline
        && let Some(b) = baseline
    {
        chart
            .draw_series(DashedLineSeries::new(
                [(b, SegmentValue::Exact(0)), (b, SegmentValue::Exact(n))],
                5,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(plot_err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                "baseline",
                (b, SegmentValue::Exact(n)),
                TextStyle::from(("sans-serif", 11).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// A bar's value label: three significant figures.
fn tick_value(v: f64) -> String {
    format!(
        " {}",
        if v.abs() >= 100.0 {
            format!("{v:.0}")
        } else if v.abs() >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.3}")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::tick;

    #[test]
    fn ticks_have_no_trailing_zeros() {
        assert_eq!(tick(1242.0), "1242");
        assert_eq!(tick(308.88), "309");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.125), "0.125");
        assert_eq!(tick(0.1), "0.1");
        assert_eq!(tick(0.0), "0");
    }
}
