//! Synthetic detection fields, measured: the time to render 50 fields of 424², how the boxes
//! at several isophote levels compare with what the classical detector (thresh 1.5, SEP's
//! filter) finds on the same PNG pixels, how much of an isolated galaxy's light its box holds,
//! and the README figure `docs/img/field_boxes.png` (a field with its boxes and classes).
//!
//! `cargo run --example field_boxes [-- FIELDS]` (default 60 fields for the comparison).

use std::time::Instant;

use gpl::data::synth::SDSS_CLASSES;
use gpl::data::synth_fields::{render_field, render_fields, FieldsConfig, BOX_LEVEL_SIGMA};
use gpl::detect::catalog::{detect_image, LoadedImage};
use gpl::detect::extract::{BackgroundParams, ExtractParams};
use gpl::report::boxes::{draw_boxes, rgb_png};

/// The sky sigma of the renderer, in counts.
const SKY_SIGMA: f32 = 10.0;

fn main() -> miette::Result<()> {
    let fields: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let start = Instant::now();
    let set = render_fields(&FieldsConfig::new(50, 1))?;
    println!(
        "render 50 fields of 424²: {:.2} s ({} galaxies, {} threads)",
        start.elapsed().as_secs_f64(),
        set.objects.iter().map(Vec::len).sum::<usize>(),
        rayon::current_num_threads()
    );

    let levels = [0.3f32, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0];
    let mut ious: Vec<Vec<f64>> = vec![Vec::new(); levels.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); levels.len()];
    let mut enclosed: Vec<Vec<f64>> = vec![Vec::new(); levels.len()];
    let (mut matched, mut total) = (0, 0);
    let config = FieldsConfig::new(fields, 7);
    for i in 0..fields {
        let field = render_field(&config, i)?;
        let rgb = image::RgbImage::from_raw(424, 424, field.rgb.clone()).expect("424² RGB");
        let luma = image::DynamicImage::ImageRgb8(rgb).to_luma32f();
        let image = LoadedImage {
            width: 424,
            height: 424,
            data: luma.into_raw().into_iter().map(|v| v * 255.0).collect(),
            wcs: None,
        };
        let back = BackgroundParams {
            bw: 64,
            bh: 64,
            fw: 3,
            fh: 3,
            fthresh: 0.0,
        };
        let catalog = detect_image(&image, &back, &ExtractParams::default())?;
        for (o, light) in field.objects.iter().zip(&field.light) {
            total += 1;
            let t = o.truth.as_ref().expect("synthetic truth");
            if !o.truncated && t.peak_snr >= 100.0 {
                for (k, &level) in levels.iter().enumerate() {
                    if let Some(b) = box_at(light, level * SKY_SIGMA, 424) {
                        enclosed[k].push(light.flux_inside(b.0, b.1, b.2, b.3) / light.total());
                    }
                }
            }
            // The detection whose centroid is nearest the galaxy's centre, within 3 px.
            let nearest = catalog
                .objects
                .iter()
                .map(|d| {
                    (
                        ((d.x + 0.5 - t.x).powi(2) + (d.y + 0.5 - t.y).powi(2)).sqrt(),
                        d,
                    )
                })
                .filter(|(r, _)| *r <= 3.0)
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let Some((_, d)) = nearest else { continue };
            matched += 1;
            let det = (
                d.xmin as f64,
                d.ymin as f64,
                d.xmax as f64 + 1.0,
                d.ymax as f64 + 1.0,
            );
            for (k, &level) in levels.iter().enumerate() {
                if let Some(truth) = box_at(light, level * SKY_SIGMA, 424) {
                    ious[k].push(iou(det, truth));
                    ratios[k].push(
                        ((det.2 - det.0) * (det.3 - det.1)
                            / ((truth.2 - truth.0) * (truth.3 - truth.1)))
                            .sqrt(),
                    );
                }
            }
        }
    }
    println!(
        "{fields} fields, {total} galaxies, {matched} with a detection within 3 px of the centre"
    );
    println!(
        "box level (sky σ) | median IoU with the detector's box | median side ratio det/truth \
         | light in the box, untruncated galaxies of peak ≥ 100 σ: min, median"
    );
    for (k, level) in levels.iter().enumerate() {
        let lowest = enclosed[k].iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{level} | {:.3} | {:.3} | {lowest:.3}, {:.3}",
            median(&mut ious[k]),
            median(&mut ratios[k]),
            median(&mut enclosed[k])
        );
    }
    println!("(boxes of the fields are drawn at {BOX_LEVEL_SIGMA} σ)");

    // The README figure: the first field of seed 1 with three or more galaxies, at 2×.
    let config = FieldsConfig::new(50, 1);
    let index = (0..50).find(|&i| set.objects[i].len() >= 3).unwrap_or(0);
    let field = render_field(&config, index)?;
    let (h, w) = (848, 848);
    let mut big = vec![0u8; h * w * 3];
    for y in 0..h {
        for x in 0..w {
            let s = ((y / 2) * 424 + x / 2) * 3;
            big[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&field.rgb[s..s + 3]);
        }
    }
    let boxes: Vec<_> = field
        .objects
        .iter()
        .map(|o| {
            let class = o.truth.as_ref().map(|t| t.galaxy10).unwrap_or(0);
            (
                o.xmin * 2.0,
                o.ymin * 2.0,
                o.xmax * 2.0,
                o.ymax * 2.0,
                format!("{class}: {}", SDSS_CLASSES[class as usize]),
            )
        })
        .collect();
    let png = rgb_png(&draw_boxes(&big, h, w, &boxes)?, h, w)?;
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/field_boxes.png");
    gpl::fsutil::write_atomic(&out, &png).map_err(|e| miette::miette!("{e}"))?;
    println!("wrote {} (field {index})", out.display());
    Ok(())
}

/// The bounding box (pixel edges, clipped to the image) of a galaxy's light at or above
/// `level` counts.
fn box_at(
    light: &gpl::data::synth_fields::GalaxyLight,
    level: f32,
    size: usize,
) -> Option<(f64, f64, f64, f64)> {
    let (mut x0, mut y0, mut x1, mut y1) = (i64::MAX, i64::MAX, i64::MIN, i64::MIN);
    for v in 0..light.side {
        for u in 0..light.side {
            if light.r[v * light.side + u] >= level {
                let (x, y) = (light.x0 + u as i64, light.y0 + v as i64);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    let s = size as f64;
    (x0 != i64::MAX).then(|| {
        (
            (x0 as f64).max(0.0),
            (y0 as f64).max(0.0),
            (x1 as f64).min(s),
            (y1 as f64).min(s),
        )
    })
}

fn iou(a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)) -> f64 {
    let w = (a.2.min(b.2) - a.0.max(b.0)).max(0.0);
    let h = (a.3.min(b.3) - a.1.max(b.1)).max(0.0);
    let inter = w * h;
    inter / ((a.2 - a.0) * (a.3 - a.1) + (b.2 - b.0) * (b.3 - b.1) - inter)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
