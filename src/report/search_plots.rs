//! Figures of the search stage: the Pareto front of objective against model size, and each
//! parameter's partial dependence under the fitted Gaussian process.

use plotters::prelude::*;

use super::plots::{color, draw_legend, padded, render, text_style};
use super::ReportError;

/// The trials that no other trial beats on both size (fewer parameters) and objective, by
/// index into `points` (params, objective), smallest first.
pub fn pareto_front(points: &[(f64, f64)], maximize: bool) -> Vec<usize> {
    let better = |a: f64, b: f64| if maximize { a > b } else { a < b };
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&i, &j| {
        points[i].0.total_cmp(&points[j].0).then_with(|| {
            if maximize {
                points[j].1.total_cmp(&points[i].1)
            } else {
                points[i].1.total_cmp(&points[j].1)
            }
        })
    });
    let mut front = Vec::new();
    let mut best: Option<f64> = None;
    for i in order {
        if best.is_none_or(|b| better(points[i].1, b)) {
            best = Some(points[i].1);
            front.push(i);
        }
    }
    front
}

/// Objective against parameters (log axis), every trial a dot, the front joined.
pub fn pareto_plot(
    points: &[(f64, f64)],
    maximize: bool,
    metric: &str,
) -> Result<Vec<u8>, ReportError> {
    let front = pareto_front(points, maximize);
    let (xlo, xhi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
            (l.min(p.0), h.max(p.0))
        });
    let (ylo, yhi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
            (l.min(p.1), h.max(p.1))
        });
    let (ylo, yhi) = padded(ylo, yhi);
    let (xlo, xhi) = if xlo.is_finite() && xlo > 0.0 {
        (xlo / 1.5, xhi * 1.5)
    } else {
        (1.0, 10.0)
    };
    render("pareto", (760, 420), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("{metric} against model size"), text_style(18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(58)
            .build_cartesian_2d((xlo..xhi).log_scale(), ylo..yhi)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("parameters (log scale)")
            .y_desc(metric)
            .label_style(text_style(12))
            .axis_desc_style(text_style(14))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.3}"))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color(7).filled())))
            .map_err(|e| e.to_string())?
            .label("trial")
            .legend(|(x, y)| Circle::new((x + 8, y), 4, color(7).filled()));
        let line: Vec<(f64, f64)> = front.iter().map(|&i| points[i]).collect();
        chart
            .draw_series(LineSeries::new(
                line.iter().copied(),
                color(1).stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color(1).stroke_width(2)));
        chart
            .draw_series(line.iter().map(|&p| Circle::new(p, 5, color(1).filled())))
            .map_err(|e| e.to_string())?;
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight, 12)
    })
}

/// One parameter's partial dependence: its values and the GP's mean and standard deviation
/// of the objective there, the other parameters held at the best trial's values.
pub struct Dependence {
    pub name: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// Small multiples, one panel per parameter: the mean, and mean ± one standard deviation.
pub fn partial_dependence(panels: &[Dependence], metric: &str) -> Result<Vec<u8>, ReportError> {
    let columns = panels.len().clamp(1, 3);
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (columns as u32 * 320, rows as u32 * 240 + 30);
    render("partial dependence", size, |root| {
        root.draw_text(
            &format!("partial dependence of {metric} (GP mean ± 1 sd, others at the best trial)"),
            &text_style(16),
            (10, 6),
        )
        .map_err(|e| e.to_string())?;
        let body = root.margin(30, 0, 0, 0);
        let areas = body.split_evenly((rows, columns));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            let xs = panel.points.iter().map(|p| p.0);
            let (xlo, xhi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                (l.min(v), h.max(v))
            });
            let (ylo, yhi) = panel
                .points
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
                    (l.min(p.1 - p.2), h.max(p.1 + p.2))
                });
            let (xlo, xhi) = padded(xlo, xhi);
            let (ylo, yhi) = padded(ylo, yhi);
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.name, text_style(14))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(48)
                .build_cartesian_2d(xlo..xhi, ylo..yhi)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .label_style(text_style(11))
                .x_labels(5)
                .y_labels(5)
                .y_label_formatter(&|v| format!("{v:.3}"))
                .draw()
                .map_err(|e| e.to_string())?;
            for (k, sign) in [(0usize, 0.0), (1, 1.0), (1, -1.0)] {
                let style = if k == 0 {
                    color(0).stroke_width(2)
                } else {
                    color(0).mix(0.4).stroke_width(1)
                };
                chart
                    .draw_series(LineSeries::new(
                        panel.points.iter().map(|p| (p.0, p.1 + sign * p.2)),
                        style,
                    ))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_keeps_only_trials_nothing_beats_on_both_axes() {
        let points = [
            (100.0, 0.5),
            (50.0, 0.4),
            (200.0, 0.45),
            (300.0, 0.6),
            (50.0, 0.3),
        ];
        assert_eq!(pareto_front(&points, true), vec![1, 0, 3]);
        // Minimising (a loss): small and low wins.
        assert_eq!(pareto_front(&points, false), vec![4]);
    }
}
