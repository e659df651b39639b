//! Figures of the explain stage: attribution maps over their images in a perceptual colormap,
//! grids of activations and filters with their labels, and the sanity-check and deletion
//! curves. Pixel data comes in as RGB tiles; captions are drawn in the embedded font.

use plotters::prelude::*;

use super::plots::{color, draw_legend, padded, render, text_style};
use super::ReportError;

/// An RGB picture (`width × height × 3` bytes) and the caption drawn above it.
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    pub rgb: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub caption: String,
}

/// Viridis (matplotlib's default: perceptually uniform, readable in grey and by colour-blind
/// readers), sampled at nine points and interpolated linearly.
const VIRIDIS: [[f32; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [71.0, 44.0, 122.0],
    [59.0, 81.0, 139.0],
    [44.0, 113.0, 142.0],
    [33.0, 144.0, 141.0],
    [39.0, 173.0, 129.0],
    [92.0, 200.0, 99.0],
    [170.0, 220.0, 50.0],
    [253.0, 231.0, 37.0],
];

/// The colour of `v` in [0, 1] (values outside are clamped).
pub fn viridis(v: f32) -> [f32; 3] {
    let x = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    } * 8.0;
    let i = (x.floor() as usize).min(7);
    let t = x - i as f32;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    [0, 1, 2].map(|k| a[k] + t * (b[k] - a[k]))
}

/// An image scaled from `[lo, hi]` to 0–255 (grey for one channel, the first three otherwise).
pub fn image_rgb(image: &[f32], channels: usize, lo: f32, hi: f32) -> Vec<u8> {
    let span = (hi - lo).max(f32::EPSILON);
    let byte = |v: f32| ((v - lo) / span * 255.0).round().clamp(0.0, 255.0) as u8;
    image
        .chunks(channels)
        .flat_map(|px| match channels {
            1 | 2 => [byte(px[0]); 3],
            _ => [byte(px[0]), byte(px[1]), byte(px[2])],
        })
        .collect()
}

/// A map in [0, 1] over an RGB image: the map's colour with weight `alpha × map`, so
/// unattributed regions show the image itself.
pub fn overlay(rgb: &[u8], map: &[f32], alpha: f32) -> Vec<u8> {
    rgb.chunks(3)
        .zip(map)
        .flat_map(|(px, &m)| {
            let c = viridis(m);
            let a = alpha
                * if m.is_finite() {
                    m.clamp(0.0, 1.0)
                } else {
                    0.0
                };
            [0, 1, 2].map(|k| (px[k] as f32 * (1.0 - a) + c[k] * a).round() as u8)
        })
        .collect()
}

/// One channel as a picture, scaled by its own range, in viridis.
pub fn channel_rgb(values: &[f32]) -> Vec<u8> {
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        });
    let span = hi - lo;
    values
        .iter()
        .flat_map(|v| {
            let t = if span > 0.0 { (v - lo) / span } else { 0.0 };
            viridis(t).map(|c| c.round() as u8)
        })
        .collect()
}

/// Tiles in rows of `columns`, each enlarged `scale` times (nearest neighbour, so pixels stay
/// pixels), its caption above it, a title on top.
pub fn grid(
    title: &str,
    tiles: &[Tile],
    columns: usize,
    scale: u32,
) -> Result<Vec<u8>, ReportError> {
    let columns = columns.clamp(1, tiles.len().max(1));
    let rows = tiles.len().div_ceil(columns).max(1);
    let cell_w = tiles.iter().map(|t| t.width).max().unwrap_or(1) * scale;
    let cell_h = tiles.iter().map(|t| t.height).max().unwrap_or(1) * scale;
    let (gap, caption, header) = (8u32, 30u32, 34u32);
    let width = (columns as u32 * (cell_w + gap) + gap).max(320);
    let height = header + rows as u32 * (cell_h + caption + gap) + gap;
    render(title, (width, height), |root| {
        root.draw_text(title, &text_style(18), (gap as i32, 8))
            .map_err(|e| e.to_string())?;
        for (k, tile) in tiles.iter().enumerate() {
            let (col, row) = ((k % columns) as u32, (k / columns) as u32);
            let x0 = gap + col * (cell_w + gap);
            let y0 = header + row * (cell_h + caption + gap);
            for (line, text) in tile.caption.lines().take(2).enumerate() {
                root.draw_text(
                    text,
                    &text_style(12),
                    (x0 as i32, (y0 + line as u32 * 14) as i32),
                )
                .map_err(|e| e.to_string())?;
            }
            let top = y0 + caption;
            for y in 0..tile.height * scale {
                for x in 0..tile.width * scale {
                    let p = (((y / scale) * tile.width + x / scale) * 3) as usize;
                    let c = RGBColor(tile.rgb[p], tile.rgb[p + 1], tile.rgb[p + 2]);
                    root.draw_pixel(((x0 + x) as i32, (top + y) as i32), &c)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    })
}

/// One line per series over labelled x positions 0..labels.len(); missing values break the
/// line.
pub fn labelled_lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    labels: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<Vec<u8>, ReportError> {
    let values = series.iter().flat_map(|(_, v)| v.iter().flatten().copied());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    let (lo, hi) = padded(lo, hi);
    let n = labels.len().max(1);
    render(title, (760, 420), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, text_style(18))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(58)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), lo..hi)
            .map_err(|e| e.to_string())?;
        let label_of = |v: &f64| {
            let k = v.round();
            if (v - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < labels.len() {
                labels[k as usize].clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(text_style(12))
            .axis_desc_style(text_style(14))
            .light_line_style(BLACK.mix(0.04))
            .x_labels(n)
            .x_label_formatter(&label_of)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (name, points)) in series.iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = points
                .iter()
                .enumerate()
                .filter_map(|(k, v)| v.map(|v| (k as f64, v)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 12)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_are_matplotlibs_and_nan_is_the_low_end() {
        assert_eq!(viridis(0.0), [68.0, 1.0, 84.0]);
        assert_eq!(viridis(1.0), [253.0, 231.0, 37.0]);
        assert_eq!(viridis(f32::NAN), viridis(0.0));
    }

    #[test]
    fn a_zero_map_leaves_the_image_untouched() {
        let rgb = vec![10, 20, 30, 40, 50, 60];
        assert_eq!(overlay(&rgb, &[0.0, 0.0], 0.6), rgb);
    }
}
