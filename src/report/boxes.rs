//! Boxes over an image: a detection field with its annotated or detected objects, each box a
//! coloured outline (one colour per distinct label) with its label, if any, in the embedded
//! font on a dark tab above the box.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::fonts::{ensure_registered, FAMILY};
use super::ReportError;

/// Bright colours that stand out on a dark sky, one per distinct label, cycled.
const BOX_COLOURS: [RGBColor; 6] = [
    RGBColor(255, 214, 0),
    RGBColor(0, 229, 255),
    RGBColor(255, 82, 197),
    RGBColor(124, 255, 79),
    RGBColor(255, 145, 0),
    RGBColor(180, 150, 255),
];

/// A box in pixel edges (xmin, ymin, xmax, ymax) and its label (empty: no text).
pub type LabelledBox = (f64, f64, f64, f64, String);

/// Draws `boxes` over an `h × w` image (RGB, or grey with one byte per pixel) and returns the
/// RGB pixels. Boxes are clipped to the image; a label goes above its box, or inside its top
/// edge when the box touches the image's top.
pub fn draw_boxes(
    image: &[u8],
    h: usize,
    w: usize,
    boxes: &[LabelledBox],
) -> Result<Vec<u8>, ReportError> {
    let figure = "boxes";
    let mut rgb: Vec<u8> = if image.len() == h * w * 3 {
        image.to_vec()
    } else if image.len() == h * w {
        image.iter().flat_map(|&v| [v, v, v]).collect()
    } else {
        return Err(ReportError::Plot {
            figure: figure.into(),
            reason: format!(
                "{} bytes are neither a {h}×{w} RGB nor a grey image",
                image.len()
            ),
        });
    };
    if boxes.is_empty() || h == 0 || w == 0 {
        return Ok(rgb);
    }
    ensure_registered()?;
    let fail = |e: String| ReportError::Plot {
        figure: figure.into(),
        reason: e,
    };
    let mut labels: Vec<&str> = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w as u32, h as u32)).into_drawing_area();
        let font = TextStyle::from((FAMILY, 12).into_font());
        for (xmin, ymin, xmax, ymax, label) in boxes {
            let k = labels.iter().position(|l| l == label).unwrap_or_else(|| {
                labels.push(label);
                labels.len() - 1
            });
            let colour = BOX_COLOURS[k % BOX_COLOURS.len()];
            let clip = |v: f64, hi: usize| v.clamp(0.0, hi as f64 - 1.0).round() as i32;
            // Edges to the pixels they enclose: [xmin, xmax) covers xmin.floor()..xmax.ceil()-1.
            let (x0, y0) = (clip(xmin.floor(), w), clip(ymin.floor(), h));
            let (x1, y1) = (clip(xmax.ceil() - 1.0, w), clip(ymax.ceil() - 1.0, h));
            root.draw(&Rectangle::new(
                [(x0, y0), (x1, y1)],
                colour.stroke_width(1),
            ))
            .map_err(|e| fail(e.to_string()))?;
            if label.is_empty() {
                continue;
            }
            let (tw, th) = root
                .estimate_text_size(label, &font)
                .map_err(|e| fail(e.to_string()))?;
            let (tw, th) = (tw as i32 + 4, th as i32 + 2);
            let top = if y0 >= th { y0 - th } else { y0 };
            root.draw(&Rectangle::new(
                [(x0, top), (x0 + tw, top + th)],
                RGBColor(20, 20, 20).mix(0.75).filled(),
            ))
            .map_err(|e| fail(e.to_string()))?;
            let style = font.color(&colour).pos(Pos::new(HPos::Left, VPos::Top));
            root.draw(&Text::new(label.clone(), (x0 + 2, top + 1), style))
                .map_err(|e| fail(e.to_string()))?;
        }
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    Ok(rgb)
}

/// `h × w` RGB pixels as PNG bytes.
/// [`draw_boxes`] encoded as a PNG.
pub fn boxes_png(
    image: &[u8],
    h: usize,
    w: usize,
    boxes: &[LabelledBox],
) -> Result<Vec<u8>, ReportError> {
    rgb_png(&draw_boxes(image, h, w, boxes)?, h, w)
}

pub fn rgb_png(rgb: &[u8], h: usize, w: usize) -> Result<Vec<u8>, ReportError> {
    let png_error = |reason: String| ReportError::Png {
        figure: "boxes".into(),
        reason,
    };
    let image = image::RgbImage::from_raw(w as u32, h as u32, rgb.to_vec())
        .ok_or_else(|| png_error(format!("{} bytes are not {h}×{w} RGB", rgb.len())))?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| png_error(e.to_string()))?;
    Ok(png.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlines_sit_on_the_box_edges_and_labels_above() {
        let (h, w) = (60, 80);
        let dark = vec![0u8; h * w * 3];
        let out = draw_boxes(
            &dark,
            h,
            w,
            &[
                (10.0, 30.0, 40.0, 50.0, "galaxy".into()),
                (60.0, 0.0, 70.0, 8.0, String::new()),
            ],
        )
        .unwrap();
        let px = |x: usize, y: usize| &out[(y * w + x) * 3..(y * w + x) * 3 + 3];
        let gold = [255, 214, 0];
        // The outline covers the pixels [10, 40) × [30, 50): columns 10 and 39, rows 30 and 49.
        for (x, y) in [(10, 30), (39, 30), (10, 49), (39, 49), (25, 30), (10, 40)] {
            assert_eq!(px(x, y), gold, "({x}, {y})");
        }
        assert_eq!(px(25, 40), [0, 0, 0], "inside stays dark");
        assert_eq!(px(9, 40), [0, 0, 0], "outside stays dark");
        // The label's tab and text lie above the box, left-aligned with it.
        let lit = (12..30).any(|x| (17..30).any(|y| px(x, y) != [0, 0, 0]));
        assert!(lit, "label drawn above the box");
        // A second label gets the second colour; an unlabelled box gets no tab.
        assert_eq!(px(60, 0), [0, 229, 255]);
        assert_eq!(px(65, 4), [0, 0, 0]);
        let grey = draw_boxes(&vec![7u8; h * w], h, w, &[]).unwrap();
        assert_eq!(grey, vec![7u8; h * w * 3]);
        assert!(draw_boxes(&[0u8; 5], h, w, &[]).is_err());
        assert!(rgb_png(&out, h, w).unwrap().starts_with(b"\x89PNG"));
    }
}
