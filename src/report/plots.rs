//! The report's figures as PNG bytes, drawn with plotters' bitmap backend in the embedded font:
//! training curves, a confusion-matrix heatmap with counts, ROC curves, and a model comparison
//! bar chart. Every function returns the encoded PNG so callers can embed or save it.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::fonts::{ensure_registered, FAMILY};
use super::model::{ComparisonRow, EpochRow};
use super::ReportError;
use crate::eval::classification::ConfusionMatrix;
use crate::eval::roc::OvrRoc;

/// Distinct, colour-blind-friendly line colours (Okabe–Ito, then Tableau), cycled.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(148, 103, 189),
];

pub(super) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A 0..n axis of n unit cells (matrix cells, bar groups) whose ticks sit at the cell centres,
/// where labels name the cells; plotters' own ranges put ticks at round numbers.
struct CellAxis {
    cells: usize,
    linear: RangedCoordf64,
}

impl CellAxis {
    fn new(cells: usize) -> Self {
        Self {
            cells,
            linear: (0f64..cells.max(1) as f64).into(),
        }
    }
}

impl Ranged for CellAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        (0..self.cells).map(|k| k as f64 + 0.5).collect()
    }

    fn range(&self) -> Range<f64> {
        self.linear.range()
    }
}

/// Draws into an RGB buffer with `draw`, then encodes it as PNG.
pub(super) fn render(
    figure: &str,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<(), String>,
) -> Result<Vec<u8>, ReportError> {
    ensure_registered()?;
    let plot_error = |reason: String| ReportError::Plot {
        figure: figure.to_string(),
        reason,
    };
    let mut pixels = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(e.to_string()))?;
        draw(&root).map_err(plot_error)?;
        root.present().map_err(|e| plot_error(e.to_string()))?;
    }
    let image =
        image::RgbImage::from_raw(size.0, size.1, pixels).ok_or_else(|| ReportError::Png {
            figure: figure.to_string(),
            reason: "pixel buffer does not match the figure size".to_string(),
        })?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| ReportError::Png {
            figure: figure.to_string(),
            reason: e.to_string(),
        })?;
    Ok(png.into_inner())
}

/// The legend box of every line plot: at `at`, on a light background, labels of `size` px.
pub(super) fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
    size: u32,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(text_style(size))
        .draw()
        .map_err(|e| e.to_string())
}

pub(super) fn text_style(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

/// Pads a value range so flat or single-point series still get a visible axis.
pub(super) fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    } else {
        (lo - span * 0.05, hi + span * 0.05)
    }
}

type Series<'a> = (&'a str, Vec<(f64, f64)>);

fn line_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
    epochs: usize,
    legend_at: SeriesLabelPosition,
) -> Result<(), String> {
    let values = series.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = padded(lo, hi);
    let mut chart = ChartBuilder::on(area)
        .caption(title, text_style(18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(58)
        .build_cartesian_2d(0.5f64..(epochs as f64 + 0.5), lo..hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .label_style(text_style(13))
        .axis_desc_style(text_style(14))
        .light_line_style(BLACK.mix(0.04))
        .x_labels(epochs.min(10))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.3}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, points)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 2, c.filled())))
            .map_err(|e| e.to_string())?;
    }
    draw_legend(&mut chart, legend_at, 13)
}

fn lr_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    points: &[(f64, f64)],
    epochs: usize,
) -> Result<(), String> {
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let x_range = 0.5f64..(epochs as f64 + 0.5);
    let series = LineSeries::new(points.iter().copied(), color(2).stroke_width(2));
    // ReduceLROnPlateau can fall by decades: a log axis then, a linear one for a step or two
    // (a log axis only labels powers of ten, which would leave such a plot unlabelled).
    if hi / lo > 20.0 {
        let mut chart = ChartBuilder::on(area)
            .caption("learning rate", text_style(18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(62)
            .build_cartesian_2d(x_range, (lo / 1.5..hi * 1.5).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("lr (log scale)")
            .label_style(text_style(13))
            .axis_desc_style(text_style(14))
            .light_line_style(BLACK.mix(0.04))
            .x_labels(epochs.min(10))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(|e| e.to_string())?;
        chart.draw_series(series).map_err(|e| e.to_string())?;
    } else {
        let (lo, hi) = padded(0.0f64.min(lo), hi);
        let mut chart = ChartBuilder::on(area)
            .caption("learning rate", text_style(18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(62)
            .build_cartesian_2d(x_range, lo.max(0.0)..hi)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("lr")
            .label_style(text_style(13))
            .axis_desc_style(text_style(14))
            .light_line_style(BLACK.mix(0.04))
            .x_labels(epochs.min(10))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.1e}"))
            .draw()
            .map_err(|e| e.to_string())?;
        chart.draw_series(series).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Loss and val_loss, accuracy and val_accuracy, and the learning rate, side by side.
pub fn training_curves(history: &[EpochRow], title: &str) -> Result<Vec<u8>, ReportError> {
    let epochs = history.iter().map(|r| r.epoch).max().unwrap_or(1).max(1);
    let pick = |f: fn(&EpochRow) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.epoch as f64, v)))
            .collect()
    };
    let loss = pick(|r| Some(r.loss));
    let val_loss = pick(|r| r.val_loss);
    let acc = pick(|r| r.accuracy);
    let val_acc = pick(|r| r.val_accuracy);
    let lr = pick(|r| r.lr.filter(|&v| v > 0.0));
    let mut panels = 1;
    if !acc.is_empty() || !val_acc.is_empty() {
        panels += 1;
    }
    if !lr.is_empty() {
        panels += 1;
    }
    render(title, (440 * panels as u32, 340), |root| {
        let root = root
            .titled(title, text_style(20))
            .map_err(|e| e.to_string())?;
        let areas = root.split_evenly((1, panels));
        let with_data = |series: Vec<Series<'static>>| {
            series
                .into_iter()
                .filter(|s| !s.1.is_empty())
                .collect::<Vec<_>>()
        };
        line_panel(
            &areas[0],
            "loss",
            "loss",
            &with_data(vec![("loss", loss), ("val_loss", val_loss)]),
            epochs,
            SeriesLabelPosition::UpperRight,
        )?;
        let mut next = 1;
        if !acc.is_empty() || !val_acc.is_empty() {
            let series = with_data(vec![("accuracy", acc), ("val_accuracy", val_acc)]);
            line_panel(
                &areas[next],
                "accuracy",
                "accuracy",
                &series,
                epochs,
                SeriesLabelPosition::LowerRight,
            )?;
            next += 1;
        }
        if !lr.is_empty() {
            lr_panel(&areas[next], &lr, epochs)?;
        }
        Ok(())
    })
}

fn shorten(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_string()
    } else {
        let cut: String = name.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// Heatmap of the row-normalised confusion matrix, each cell labelled with its count.
pub fn confusion_heatmap(
    confusion: &ConfusionMatrix,
    class_names: &[String],
    title: &str,
) -> Result<Vec<u8>, ReportError> {
    let c = confusion.counts.len();
    let square = |m: usize, rows: &[usize]| m == c && rows.iter().all(|&r| r == c);
    let count_rows: Vec<usize> = confusion.counts.iter().map(Vec::len).collect();
    let share_rows: Vec<usize> = confusion.normalized.iter().map(Vec::len).collect();
    if c == 0 || !square(c, &count_rows) || !square(confusion.normalized.len(), &share_rows) {
        return Err(ReportError::Plot {
            figure: title.to_string(),
            reason: format!("the confusion matrix is not a non-empty square ({c} rows)"),
        });
    }
    let cell = (460 / c).clamp(26, 70) as u32;
    let size = (cell * c as u32 + 260, cell * c as u32 + 130);
    render(title, size, |root| {
        // Cell (row r, column k) spans [k, k+1] × [c-1-r, c-r]: row 0 on top. Ticks sit at
        // the cell centres, labelled with the class index (x) and index: name (y).
        let mut chart = ChartBuilder::on(root)
            .caption(title, text_style(18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(180)
            .build_cartesian_2d(CellAxis::new(c), CellAxis::new(c))
            .map_err(|e| e.to_string())?;
        let index = |v: f64| (v.floor().max(0.0) as usize).min(c.saturating_sub(1));
        let x_names = |v: &f64| index(*v).to_string();
        let y_names = |v: &f64| {
            let row = c - 1 - index(*v);
            let name = class_names
                .get(row)
                .map(|n| shorten(n, 20))
                .unwrap_or_default();
            format!("{row}: {name}")
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .x_label_formatter(&x_names)
            .y_label_formatter(&y_names)
            .label_style(text_style(13))
            .axis_desc_style(text_style(14))
            .draw()
            .map_err(|e| e.to_string())?;
        let top = |r: usize| (c - r) as f64;
        let mut cells = Vec::new();
        for r in 0..c {
            for k in 0..c {
                let v = confusion.normalized[r][k];
                // White → the dark end of matplotlib's "Blues" with the share of the true class.
                let shade = |lo: f64, hi: f64| (lo + (hi - lo) * v).round() as u8;
                let fill = RGBColor(shade(247.0, 8.0), shade(251.0, 48.0), shade(255.0, 107.0));
                cells.push(Rectangle::new(
                    [(k as f64, top(r) - 1.0), (k as f64 + 1.0, top(r))],
                    fill.filled(),
                ));
            }
        }
        chart.draw_series(cells).map_err(|e| e.to_string())?;
        let font_size = (cell / 3).clamp(10, 18);
        let mut labels = Vec::new();
        for r in 0..c {
            for k in 0..c {
                let v = confusion.normalized[r][k];
                // References to the constants are 'static, as the text style's colour must be.
                let ink: &'static RGBColor = if v > 0.5 { &WHITE } else { &BLACK };
                let style = text_style(font_size)
                    .color(ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                labels.push(Text::new(
                    confusion.counts[r][k].to_string(),
                    (k as f64 + 0.5, top(r) - 0.5),
                    style,
                ));
            }
        }
        chart.draw_series(labels).map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// One-vs-rest ROC curve per class with its AUC, plus the micro and macro averages.
pub fn roc_curves(
    roc: &OvrRoc,
    class_names: &[String],
    title: &str,
) -> Result<Vec<u8>, ReportError> {
    render(title, (720, 560), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, text_style(18))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1.0001f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .label_style(text_style(13))
            .axis_desc_style(text_style(14))
            .light_line_style(BLACK.mix(0.03))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                6,
                4,
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
        for (k, curve) in roc.curves.iter().enumerate() {
            let Some(curve) = curve else { continue };
            let c = color(k);
            let auc = roc.auc[k]
                .map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "n/a".into());
            let name = class_names
                .get(k)
                .map(|n| shorten(n, 22))
                .unwrap_or_else(|| k.to_string());
            chart
                .draw_series(LineSeries::new(
                    curve.fpr.iter().copied().zip(curve.tpr.iter().copied()),
                    c.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(format!("{name} (AUC {auc})"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        if let (Some(curve), Some(auc)) = (&roc.micro_curve, roc.micro_auc) {
            chart
                .draw_series(DashedLineSeries::new(
                    curve.fpr.iter().copied().zip(curve.tpr.iter().copied()),
                    8,
                    4,
                    BLACK.stroke_width(3),
                ))
                .map_err(|e| e.to_string())?
                .label(format!("micro average (AUC {auc:.3})"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(3))
                });
        }
        if let (Some(curve), Some(auc)) = (&roc.macro_curve, roc.macro_auc) {
            let grey = RGBColor(90, 90, 90);
            chart
                .draw_series(DashedLineSeries::new(
                    curve.fpr.iter().copied().zip(curve.tpr.iter().copied()),
                    3,
                    3,
                    grey.stroke_width(3),
                ))
                .map_err(|e| e.to_string())?
                .label(format!("macro average (AUC {auc:.3})"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], grey.stroke_width(3))
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight, 12)
    })
}

/// Reads one score of a comparison row.
type ScoreOf = fn(&ComparisonRow) -> Option<f64>;

/// Grouped bars: accuracy, macro F1 and macro AUC of every evaluated model.
pub fn model_comparison(rows: &[ComparisonRow], title: &str) -> Result<Vec<u8>, ReportError> {
    let n = rows.len().max(1);
    let width = (150 * n as u32 + 160).clamp(560, 1400);
    render(title, (width, 440), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, text_style(18))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(CellAxis::new(n), 0f64..1.32f64)
            .map_err(|e| e.to_string())?;
        let names = |v: &f64| {
            rows.get(v.floor() as usize)
                .map(|r| shorten(&r.model, 18))
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&names)
            .y_labels(7)
            .y_label_formatter(&|v| {
                if *v <= 1.0 + 1e-9 {
                    format!("{v:.1}")
                } else {
                    String::new()
                }
            })
            .y_desc("score")
            .label_style(text_style(13))
            .axis_desc_style(text_style(14))
            .draw()
            .map_err(|e| e.to_string())?;
        let metrics: [(&str, ScoreOf); 3] = [
            ("accuracy", |r| Some(r.scores.accuracy)),
            ("macro F1", |r| Some(r.scores.f1)),
            ("macro AUC", |r| r.scores.auc),
        ];
        for (m, (label, value)) in metrics.iter().enumerate() {
            let c = color(m);
            // Group i spans [i, i+1]: three bars of width 0.24 with gaps.
            let left = |i: usize| i as f64 + 0.13 + 0.25 * m as f64;
            let bars = rows
                .iter()
                .enumerate()
                .filter_map(|(i, r)| value(r).map(|v| (i, v)));
            chart
                .draw_series(bars.clone().map(|(i, v)| {
                    Rectangle::new([(left(i), 0.0), (left(i) + 0.23, v)], c.filled())
                }))
                .map_err(|e| e.to_string())?
                .label(*label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
            let style = text_style(11).pos(Pos::new(HPos::Center, VPos::Bottom));
            chart
                .draw_series(bars.map(|(i, v)| {
                    Text::new(
                        format!("{v:.3}"),
                        (left(i) + 0.115, v + 0.01),
                        style.clone(),
                    )
                }))
                .map_err(|e| e.to_string())?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 13)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::roc::OvrRoc;
    use crate::eval::ModelScores;

    fn is_png(bytes: &[u8]) -> bool {
        image::load_from_memory_with_format(bytes, image::ImageFormat::Png).is_ok()
    }

    #[test]
    fn degenerate_inputs_draw_or_refuse_without_panicking() {
        assert!(is_png(&training_curves(&[], "empty").unwrap()));
        let one = EpochRow {
            epoch: 1,
            loss: 0.5,
            accuracy: None,
            val_loss: None,
            val_accuracy: None,
            lr: Some(0.0),
        };
        assert!(is_png(&training_curves(&[one], "one epoch").unwrap()));
        let single = ConfusionMatrix {
            counts: vec![vec![3]],
            normalized: vec![vec![1.0]],
        };
        assert!(is_png(
            &confusion_heatmap(&single, &[], "one class, no names").unwrap()
        ));
        let ragged = ConfusionMatrix {
            counts: vec![vec![1, 2], vec![3]],
            normalized: vec![vec![0.5, 0.5], vec![1.0]],
        };
        assert!(confusion_heatmap(&ragged, &[], "ragged").is_err());
        let empty = ConfusionMatrix {
            counts: vec![],
            normalized: vec![],
        };
        assert!(confusion_heatmap(&empty, &[], "empty").is_err());
        let no_curves = OvrRoc {
            curves: vec![None],
            auc: vec![None],
            macro_auc: None,
            micro_auc: None,
            micro_curve: None,
            macro_curve: None,
            undefined_classes: vec![0],
        };
        assert!(is_png(&roc_curves(&no_curves, &[], "no curves").unwrap()));
        assert!(is_png(&model_comparison(&[], "no models").unwrap()));
        let row = ComparisonRow {
            model: "m".into(),
            dataset: "d".into(),
            stage: "s".into(),
            size: None,
            scores: ModelScores {
                accuracy: 1.0,
                precision: 1.0,
                recall: 1.0,
                f1: 1.0,
                auc: None,
            },
        };
        assert!(is_png(&model_comparison(&[row], "no AUC").unwrap()));
    }
}
