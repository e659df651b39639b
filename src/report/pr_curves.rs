//! Precision-recall curves of a COCO box evaluation: one line per class, pycocotools'
//! interpolated precision at its recall thresholds, with the class's AP in the legend.

use plotters::prelude::*;

use super::plots::{color, draw_legend, render, text_style};
use super::ReportError;
use crate::eval::detection::BoxEvaluation;

/// One curve per class at the IoU threshold `iou` (which must be one of the evaluation's,
/// e.g. 0.5), area "all" and the largest maxDets. Classes without ground truth have no curve
/// and are listed as "n/a".
pub fn pr_curves(
    eval: &BoxEvaluation,
    class_names: &[String],
    iou: f64,
    title: &str,
) -> Result<Vec<u8>, ReportError> {
    let p = &eval.params;
    let plot_error = |reason: String| ReportError::Plot {
        figure: title.to_string(),
        reason,
    };
    let t = p
        .iou_thresholds
        .iter()
        .position(|&v| v == iou)
        .ok_or_else(|| plot_error(format!("IoU {iou} is not one of the evaluated thresholds")))?;
    let a = p
        .area_ranges
        .iter()
        .position(|r| r.label == "all")
        .ok_or_else(|| plot_error("the evaluation has no area range \"all\"".into()))?;
    let m = p.max_dets.len() - 1;
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
            .x_desc("recall")
            .y_desc(format!("precision (IoU {iou:.2})"))
            .label_style(text_style(13))
            .axis_desc_style(text_style(14))
            .light_line_style(BLACK.mix(0.03))
            .draw()
            .map_err(|e| e.to_string())?;
        for k in 0..eval.classes {
            let name = class_names.get(k).cloned().unwrap_or_else(|| k.to_string());
            let Some(curve) = eval.pr_curve(t, k, a, m) else {
                continue;
            };
            let ap = eval
                .average_precision(Some(k), Some(iou), "all", p.max_dets[m])
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "n/a".into());
            let c = color(k);
            chart
                .draw_series(LineSeries::new(curve, c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(format!("{name} (AP {ap})"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerLeft, 12)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::detection::{evaluate_boxes, BBox, CocoParams, Detection, TruthBox};

    #[test]
    fn writes_a_png_with_a_line_per_class() {
        let b = |x: f64| BBox {
            xmin: x,
            ymin: x,
            xmax: x + 40.0,
            ymax: x + 40.0,
        };
        let truth: Vec<TruthBox> = (0..6)
            .map(|i| TruthBox {
                image: i,
                class: i % 2,
                bbox: b(10.0),
                ignore: false,
            })
            .collect();
        let dets: Vec<Detection> = (0..6)
            .map(|i| Detection {
                image: i,
                class: i % 2,
                score: 0.1 * i as f64,
                bbox: b(if i < 3 { 10.0 } else { 30.0 }),
            })
            .collect();
        let eval = evaluate_boxes(6, 3, &truth, &dets, &CocoParams::default()).unwrap();
        let names = ["spiral".to_string(), "elliptical".into(), "merger".into()];
        let png = pr_curves(&eval, &names, 0.5, "PR curves").unwrap();
        let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (720, 560));
        // Both classes with truth are drawn in their colours.
        for k in 0..2 {
            let c = color(k);
            assert!(
                img.pixels().any(|p| p.0 == [c.0, c.1, c.2]),
                "no pixel of class {k}'s colour"
            );
        }
        assert!(pr_curves(&eval, &names, 0.42, "PR").is_err());
    }
}
