//! Synthetic detection fields (`synthetic(fields)`, `gpl data synth --kind fields`): square
//! colour cutouts like Galaxy Zoo 2's, each holding one to `max_galaxies` galaxies of known
//! Galaxy10 class with a box per galaxy.
//!
//! Every galaxy is drawn by the Galaxy10 renderer (`synth::galaxy_stamp`) into a stamp of its
//! own, at a size 0.8–1.6 times a Galaxy10 image's, turned by a multiple of 90° and maybe
//! mirrored, and added to the field: the first near the centre (Galaxy Zoo cutouts are centred
//! on their target), the others anywhere, a third of them close to one already placed, so
//! blends and near neighbours occur. Then field stars through the same PSF (a tenth of them
//! bright enough to saturate and bleed along their column), cosmic rays (sharp, one band,
//! never PSF-convolved), a linear sky gradient, the Galaxy10 sky noise and the same asinh
//! stretch, so a 69 × 69 crop around a galaxy looks like a Galaxy10 image.
//!
//! A galaxy's box bounds where its noiseless r-band light after the PSF is at least
//! `BOX_LEVEL_SIGMA` sky sigmas per pixel (docs/decisions.md, "Synthetic detection fields"),
//! clipped to the image (`truncated` when cut). Box coordinates are VOC's pixel edges: pixel
//! (i, j) covers x in [i, i + 1), y in [j, j + 1); the truth's centre is in the same frame.
//!
//! Field `i` depends only on (seed, i): it has its own ChaCha stream, so `count: 50` and
//! `count: 100` share their first 50 fields and fields render in parallel.

use rand::distributions::WeightedIndex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::f32::consts::PI;

use super::fields::{FieldObject, FieldSet, SyntheticTruth};
use super::synth::{
    add_sky_noise, add_star, galaxy_stamp, log_uniform, star_look, to_rgb, SDSS_COUNTS, SKY_SIGMA,
};
use super::{DataError, ImageSet};

/// The detection classes of a synthetic field set.
pub const FIELD_CLASSES: [&str; 1] = ["galaxy"];

/// The box isophote: noiseless r-band surface brightness after the PSF, in sky sigmas per
/// pixel (docs/decisions.md, "Synthetic detection fields", for the measurement behind it).
pub const BOX_LEVEL_SIGMA: f32 = 0.4;

/// Boxes narrower or shorter than this (px, after clipping) are not drawn at all.
pub const MIN_BOX_SIDE: f64 = 4.0;

/// A galaxy's size relative to a Galaxy10 image's (log-uniform).
const SCALE_RANGE: (f32, f32) = (0.8, 1.6);

/// Stamp side per unit of scale: wide enough that the box isophote of the largest, brightest
/// galaxies stays inside (`stamps_hold_the_box_isophote`).
const STAMP_PER_SCALE: f32 = 160.0;

/// Charge a pixel holds, in counts above the sky; the excess bleeds along the column.
const FULL_WELL: f32 = 2000.0 * SKY_SIGMA;

/// Where the field streams start, away from Galaxy10's (0..count and u64::MAX).
const FIELD_STREAMS: u64 = 1 << 62;

/// What to render. Every number that changes the pixels is here, so a stage can fingerprint
/// it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsConfig {
    pub count: usize,
    pub seed: u64,
    /// Image side in pixels (Galaxy Zoo 2 cutouts are 424).
    #[serde(default = "default_size")]
    pub size: usize,
    /// Divides every galaxy's peak signal-to-noise, as `SynthConfig::noise` does.
    #[serde(default = "one")]
    pub noise: f32,
    /// A field holds 1..=max_galaxies galaxies (uniform), before any is dropped for a box
    /// under `MIN_BOX_SIDE`.
    #[serde(default = "default_max_galaxies")]
    pub max_galaxies: usize,
}

/// Galaxy Zoo 2's cutout side.
pub const DEFAULT_SIZE: usize = 424;

fn default_size() -> usize {
    DEFAULT_SIZE
}

fn one() -> f32 {
    1.0
}

fn default_max_galaxies() -> usize {
    4
}

impl FieldsConfig {
    pub fn new(count: usize, seed: u64) -> Self {
        FieldsConfig {
            count,
            seed,
            size: default_size(),
            noise: 1.0,
            max_galaxies: default_max_galaxies(),
        }
    }

    fn validate(&self) -> Result<(), DataError> {
        // Three f32 bands of a 2048² field are 50 MB per rendering thread.
        if !(64..=2048).contains(&self.size) {
            return Err(DataError::invalid(
                "fields size",
                format!("{} px is outside 64..=2048", self.size),
            ));
        }
        if !(self.noise.is_finite() && self.noise > 0.0) {
            return Err(DataError::invalid(
                "fields noise",
                format!("{} must be a positive number", self.noise),
            ));
        }
        if !(1..=64).contains(&self.max_galaxies) {
            return Err(DataError::invalid(
                "fields max_galaxies",
                format!("{} is outside 1..=64", self.max_galaxies),
            ));
        }
        Ok(())
    }
}

/// One galaxy's noiseless r-band light (counts) as it lies in the field: a `side`² stamp whose
/// pixel (u, v) is the field's (x0 + u, y0 + v), possibly partly outside the image.
#[derive(Clone, Debug, PartialEq)]
pub struct GalaxyLight {
    pub x0: i64,
    pub y0: i64,
    pub side: usize,
    pub r: Vec<f32>,
}

impl GalaxyLight {
    /// The light inside the pixel rectangle [xmin, xmax) × [ymin, ymax) (edges in pixels).
    pub fn flux_inside(&self, xmin: f64, ymin: f64, xmax: f64, ymax: f64) -> f64 {
        let mut sum = 0.0;
        for v in 0..self.side {
            let y = (self.y0 + v as i64) as f64 + 0.5;
            if y < ymin || y > ymax {
                continue;
            }
            for u in 0..self.side {
                let x = (self.x0 + u as i64) as f64 + 0.5;
                if x >= xmin && x <= xmax {
                    sum += f64::from(self.r[v * self.side + u]);
                }
            }
        }
        sum
    }

    pub fn total(&self) -> f64 {
        self.r.iter().map(|&v| f64::from(v)).sum()
    }
}

/// One rendered field: its RGB pixels (`size² × 3`), one object per galaxy drawn, and, in the
/// same order, each galaxy's noiseless light (for the tests that check the boxes).
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedField {
    pub rgb: Vec<u8>,
    pub objects: Vec<FieldObject>,
    pub light: Vec<GalaxyLight>,
}

/// Renders the whole set in parallel: `field_00000`, `field_00001`, ...
pub fn render_fields(config: &FieldsConfig) -> Result<FieldSet, DataError> {
    config.validate()?;
    let fields: Vec<RenderedField> = (0..config.count)
        .into_par_iter()
        .map(|i| render_field_unchecked(config, i))
        .collect();
    let side = config.size;
    let mut images = Vec::with_capacity(config.count * side * side * 3);
    let mut objects = Vec::with_capacity(config.count);
    for field in fields {
        images.extend_from_slice(&field.rgb);
        objects.push(field.objects);
    }
    Ok(FieldSet {
        images: ImageSet {
            height: side,
            width: side,
            channels: 3,
            images,
            labels: vec![0; config.count],
            class_names: FIELD_CLASSES.iter().map(|s| s.to_string()).collect(),
        },
        objects,
        names: (0..config.count).map(field_name).collect(),
    })
}

/// The name of field `index`: `field_00012`.
pub fn field_name(index: usize) -> String {
    format!("field_{index:05}")
}

/// Field `index` of the set `config` describes (its count does not matter).
pub fn render_field(config: &FieldsConfig, index: usize) -> Result<RenderedField, DataError> {
    config.validate()?;
    Ok(render_field_unchecked(config, index))
}

fn render_field_unchecked(config: &FieldsConfig, index: usize) -> RenderedField {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(FIELD_STREAMS + index as u64);
    let size = config.size;
    let n = size * size;
    let mut bands = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
    // One PSF per field, as wide as the Galaxy10 images' (FWHM 1.0–2.2 px).
    let psf_sigma = rng.gen_range(1.0f32..2.2) / 2.355;
    // The weights are ten positive constants, so the distribution always exists.
    let classes = WeightedIndex::new(SDSS_COUNTS).expect("positive class weights");
    let wanted = rng.gen_range(1..=config.max_galaxies);
    let mut placed: Vec<(f32, f32, f32)> = Vec::new();
    let mut objects = Vec::new();
    let mut light = Vec::new();
    for g in 0..wanted {
        let class = classes.sample(&mut rng) as u32;
        let scale = log_uniform(&mut rng, SCALE_RANGE.0, SCALE_RANGE.1);
        let (cx, cy) = position(g, &placed, size, scale, &mut rng);
        let snr = log_uniform(&mut rng, 10.0, 200.0) / config.noise;
        let (turns, mirror) = (rng.gen_range(0..4u8), rng.gen_bool(0.5));
        let side = (STAMP_PER_SCALE * scale).ceil() as usize | 1;
        let stamp = galaxy_stamp(class, scale, side, psf_sigma, &mut rng);
        let gain = snr * SKY_SIGMA;
        let stamp = stamp.map(|band| {
            orient(&band, side, turns, mirror)
                .into_iter()
                .map(|v| v * gain)
                .collect::<Vec<f32>>()
        });
        let half = (side / 2) as i64;
        let (x0, y0) = (cx.round() as i64 - half, cy.round() as i64 - half);
        let galaxy = GalaxyLight {
            x0,
            y0,
            side,
            r: stamp[1].clone(),
        };
        let Some(object) = annotate(&galaxy, class, size) else {
            continue;
        };
        add_stamp(&mut bands, size, &stamp, &galaxy);
        placed.push((cx, cy, scale));
        objects.push(object);
        light.push(galaxy);
    }
    add_stars(&mut bands, size, psf_sigma, &mut rng);
    add_cosmic_rays(&mut bands, size, &mut rng);
    add_sky_gradient(&mut bands, size, &mut rng);
    for band in bands.iter_mut() {
        saturate(band, size);
        add_sky_noise(band, &mut rng);
        band.iter_mut().for_each(|v| *v = v.min(FULL_WELL));
    }
    let mut rgb = vec![0u8; n * 3];
    to_rgb(&bands, &mut rgb);
    RenderedField {
        rgb,
        objects,
        light,
    }
}

/// Where galaxy `g` goes: the first near the centre; later ones next to an earlier galaxy a
/// third of the time (blends and near neighbours), anywhere otherwise.
fn position(
    g: usize,
    placed: &[(f32, f32, f32)],
    size: usize,
    scale: f32,
    rng: &mut ChaCha8Rng,
) -> (f32, f32) {
    let s = size as f32;
    if g == 0 {
        return (
            rng.gen_range(0.4 * s..0.6 * s),
            rng.gen_range(0.4 * s..0.6 * s),
        );
    }
    if !placed.is_empty() && rng.gen_bool(1.0 / 3.0) {
        let (x, y, other) = placed[rng.gen_range(0..placed.len())];
        // 8–40 px apart at Galaxy10 scale: from overlapping discs to neighbours that touch.
        let distance = rng.gen_range(8.0..40.0) * 0.5 * (scale + other);
        let angle = rng.gen_range(0.0..2.0 * PI);
        let clamp = |v: f32| v.clamp(0.0, s - 1.0);
        return (
            clamp(x + distance * angle.cos()),
            clamp(y + distance * angle.sin()),
        );
    }
    (rng.gen_range(0.0..s), rng.gen_range(0.0..s))
}

/// A square `side`² band turned `turns` quarter turns counter-clockwise, mirrored left to
/// right first when `mirror`: `data::augment`'s flip and rot90 conventions.
fn orient(band: &[f32], side: usize, turns: u8, mirror: bool) -> Vec<f32> {
    let last = side - 1;
    let mut out = vec![0f32; band.len()];
    for r in 0..side {
        for c in 0..side {
            // The pixel that lands on (r, c) after the rotation, then undo the mirror.
            let (sr, sc) = match turns % 4 {
                0 => (r, c),
                1 => (c, last - r),
                2 => (last - r, last - c),
                _ => (last - c, r),
            };
            let sc = if mirror { last - sc } else { sc };
            out[r * side + c] = band[sr * side + sc];
        }
    }
    out
}

/// The galaxy's box and truth, or `None` when its box would be under `MIN_BOX_SIDE` or its
/// light-weighted centre lies outside the image.
fn annotate(galaxy: &GalaxyLight, class: u32, size: usize) -> Option<FieldObject> {
    let level = BOX_LEVEL_SIGMA * SKY_SIGMA;
    let side = galaxy.side;
    let (mut umin, mut umax, mut vmin, mut vmax) = (usize::MAX, 0, usize::MAX, 0);
    let (mut sum, mut sx, mut sy, mut peak) = (0f64, 0f64, 0f64, 0f32);
    for v in 0..side {
        for u in 0..side {
            let value = galaxy.r[v * side + u];
            if value >= level {
                umin = umin.min(u);
                umax = umax.max(u);
                vmin = vmin.min(v);
                vmax = vmax.max(v);
            }
            let w = f64::from(value);
            sum += w;
            sx += w * (u as f64 + 0.5);
            sy += w * (v as f64 + 0.5);
            peak = peak.max(value);
        }
    }
    if umin == usize::MAX || sum <= 0.0 {
        return None;
    }
    let (x, y) = (galaxy.x0 as f64 + sx / sum, galaxy.y0 as f64 + sy / sum);
    let s = size as f64;
    if !(0.0..s).contains(&x) || !(0.0..s).contains(&y) {
        return None;
    }
    let edges = |lo: usize, hi: usize, origin: i64| {
        let (a, b) = ((origin + lo as i64) as f64, (origin + hi as i64 + 1) as f64);
        (a.max(0.0), b.min(s), a < 0.0 || b > s)
    };
    let (xmin, xmax, cut_x) = edges(umin, umax, galaxy.x0);
    let (ymin, ymax, cut_y) = edges(vmin, vmax, galaxy.y0);
    if xmax - xmin < MIN_BOX_SIDE || ymax - ymin < MIN_BOX_SIDE {
        return None;
    }
    Some(FieldObject {
        class: 0,
        xmin,
        ymin,
        xmax,
        ymax,
        truncated: cut_x || cut_y,
        difficult: false,
        truth: Some(SyntheticTruth {
            galaxy10: class,
            x,
            y,
            flux: sum / f64::from(SKY_SIGMA),
            radius: half_light_radius(galaxy, sx / sum, sy / sum, sum),
            peak_snr: f64::from(peak / SKY_SIGMA),
        }),
    })
}

/// The radius around (cx, cy) (stamp pixels) of the circle holding half of `total`.
fn half_light_radius(galaxy: &GalaxyLight, cx: f64, cy: f64, total: f64) -> f64 {
    let side = galaxy.side;
    let mut rings: Vec<(f64, f64)> = (0..side * side)
        .map(|i| {
            let (u, v) = ((i % side) as f64 + 0.5, (i / side) as f64 + 0.5);
            ((u - cx).hypot(v - cy), f64::from(galaxy.r[i]))
        })
        .collect();
    rings.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut acc = 0.0;
    for (r, w) in rings {
        acc += w;
        if acc >= 0.5 * total {
            return r;
        }
    }
    0.0
}

/// Adds a stamp's three bands where they overlap the field.
fn add_stamp(bands: &mut [Vec<f32>; 3], size: usize, stamp: &[Vec<f32>; 3], at: &GalaxyLight) {
    for v in 0..at.side {
        let y = at.y0 + v as i64;
        if y < 0 || y >= size as i64 {
            continue;
        }
        for u in 0..at.side {
            let x = at.x0 + u as i64;
            if x < 0 || x >= size as i64 {
                continue;
            }
            let (i, j) = (y as usize * size + x as usize, v * at.side + u);
            for (band, s) in bands.iter_mut().zip(stamp) {
                band[i] += s[j];
            }
        }
    }
}

/// Field stars at the Galaxy10 images' density (0.7 per 69² px), through the field's PSF; one
/// in ten is 100 times brighter (300–30,000 sky sigmas at its peak) and saturates.
fn add_stars(bands: &mut [Vec<f32>; 3], size: usize, psf_sigma: f32, rng: &mut ChaCha8Rng) {
    let area = (size as f32 / 69.0).powi(2);
    let count = Poisson::new(0.7 * area)
        .map(|p| p.sample(rng) as usize)
        .unwrap_or(0);
    for _ in 0..count {
        let low = if rng.gen_bool(0.1) { 300.0 } else { 3.0 };
        let (colour, peak) = star_look(rng, low);
        let at = (
            rng.gen_range(0.0..size as f32),
            rng.gen_range(0.0..size as f32),
        );
        add_star(bands, size, at, psf_sigma, peak, colour);
    }
}

/// Cosmic rays: straight tracks 1–14 px long, one pixel wide, in one band (the bands are
/// separate exposures), 15–400 sky sigmas per pixel; two per 424² px on average. They hit the
/// detector, so the PSF never blurs them.
fn add_cosmic_rays(bands: &mut [Vec<f32>; 3], size: usize, rng: &mut ChaCha8Rng) {
    let area = (size as f32 / 424.0).powi(2);
    let count = Poisson::new(2.0 * area)
        .map(|p| p.sample(rng) as usize)
        .unwrap_or(0);
    for _ in 0..count {
        let band = rng.gen_range(0..3usize);
        let length: f32 = rng.gen_range(1.0..14.0);
        let angle = rng.gen_range(0.0..PI);
        let (x, y) = (
            rng.gen_range(0.0..size as f32),
            rng.gen_range(0.0..size as f32),
        );
        let deposit = log_uniform(rng, 15.0, 400.0) * SKY_SIGMA;
        let steps = (2.0 * length).ceil() as usize;
        let mut hit: Vec<usize> = (0..=steps)
            .filter_map(|t| {
                let d = t as f32 * 0.5;
                let (px, py) = (x + d * angle.cos(), y + d * angle.sin());
                (px < size as f32 && py < size as f32).then(|| py as usize * size + px as usize)
            })
            .collect();
        hit.sort_unstable();
        hit.dedup();
        for i in hit {
            bands[band][i] += deposit * rng.gen_range(0.6..1.0);
        }
    }
}

/// A linear sky residual: up to 1.5 sky sigmas from one side of the field to the other, in a
/// random direction, zero at the centre.
fn add_sky_gradient(bands: &mut [Vec<f32>; 3], size: usize, rng: &mut ChaCha8Rng) {
    let amplitude = rng.gen_range(0.0..1.5) * SKY_SIGMA;
    let angle = rng.gen_range(0.0..2.0 * PI);
    let (gx, gy) = (
        amplitude * angle.cos() / size as f32,
        amplitude * angle.sin() / size as f32,
    );
    let c = (size as f32 - 1.0) / 2.0;
    for band in bands.iter_mut() {
        for (i, v) in band.iter_mut().enumerate() {
            let (x, y) = ((i % size) as f32, (i / size) as f32);
            *v += gx * (x - c) + gy * (y - c);
        }
    }
}

/// Charge over the full well spills into the pixels above and below along the column, half
/// each way, filling them up to the well in turn (the bleed trails of saturated stars).
fn saturate(band: &mut [f32], size: usize) {
    if band.iter().all(|&v| v <= FULL_WELL) {
        return;
    }
    for x in 0..size {
        let mut excess = vec![0f32; size];
        for (y, e) in excess.iter_mut().enumerate() {
            let v = &mut band[y * size + x];
            if *v > FULL_WELL {
                *e = *v - FULL_WELL;
                *v = FULL_WELL;
            }
        }
        if excess.iter().all(|&e| e == 0.0) {
            continue;
        }
        let mut carry = 0f32;
        for (y, &e) in excess.iter().enumerate() {
            carry += 0.5 * e;
            let v = &mut band[y * size + x];
            let take = carry.min(FULL_WELL - *v).max(0.0);
            *v += take;
            carry -= take;
        }
        carry = 0.0;
        for (y, &e) in excess.iter().enumerate().rev() {
            carry += 0.5 * e;
            let v = &mut band[y * size + x];
            let take = carry.min(FULL_WELL - *v).max(0.0);
            *v += take;
            carry -= take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_hold_the_box_isophote() {
        // The largest galaxies at the brightest peak: the box level never reaches the stamp's
        // edge, so no box is cut by its own stamp.
        let scale = SCALE_RANGE.1;
        let side = (STAMP_PER_SCALE * scale).ceil() as usize | 1;
        let level = BOX_LEVEL_SIGMA / 200.0;
        for class in 0..10u32 {
            for seed in 0..3 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let r = &galaxy_stamp(class, scale, side, 2.2 / 2.355, &mut rng)[1];
                let edge = (0..side)
                    .flat_map(|i| [i, (side - 1) * side + i, i * side, i * side + side - 1])
                    .map(|i| r[i])
                    .fold(0f32, f32::max);
                assert!(
                    edge < level,
                    "class {class} seed {seed}: edge {edge} of peak 1"
                );
            }
        }
    }

    #[test]
    fn orient_turns_and_mirrors_like_the_augmentation() {
        // 3 × 3 with values 0..9: one turn counter-clockwise brings the top-right to the top-left.
        let band: Vec<f32> = (0..9).map(|v| v as f32).collect();
        assert_eq!(orient(&band, 3, 1, false)[0], 2.0);
        assert_eq!(orient(&band, 3, 0, true)[0], 2.0);
        assert_eq!(
            orient(&band, 3, 2, false),
            band.iter().rev().cloned().collect::<Vec<_>>()
        );
        assert_eq!(orient(&orient(&band, 3, 1, false), 3, 3, false), band);
    }

    #[test]
    fn saturated_charge_bleeds_along_the_column_and_is_kept() {
        let size = 9;
        let mut band = vec![0f32; size * size];
        band[4 * size + 4] = 5.0 * FULL_WELL;
        saturate(&mut band, size);
        assert!(band.iter().all(|&v| v <= FULL_WELL));
        let column: f32 = (0..size).map(|y| band[y * size + 4]).sum();
        assert_eq!(column, 5.0 * FULL_WELL);
        assert_eq!(band[2 * size + 4], FULL_WELL);
        assert_eq!(band[6 * size + 4], FULL_WELL);
        assert_eq!(band[4 * size + 3], 0.0, "no bleeding across columns");
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            FieldsConfig {
                size: 10,
                ..FieldsConfig::new(1, 1)
            },
            FieldsConfig {
                noise: 0.0,
                ..FieldsConfig::new(1, 1)
            },
            FieldsConfig {
                max_galaxies: 0,
                ..FieldsConfig::new(1, 1)
            },
        ] {
            assert!(matches!(
                render_fields(&bad),
                Err(DataError::InvalidConfig { .. })
            ));
        }
        let json = r#"{"count": 2, "seed": 1}"#;
        let parsed: FieldsConfig = serde_json::from_str(json).unwrap();
        assert_eq!(parsed, FieldsConfig::new(2, 1));
        assert!(
            serde_json::from_str::<FieldsConfig>(r#"{"count": 2, "seed": 1, "x": 0}"#).is_err()
        );
    }

    #[test]
    fn fields_are_deterministic_and_independent_of_the_count() {
        let small = render_fields(&FieldsConfig::new(3, 9)).unwrap();
        let large = render_fields(&FieldsConfig::new(5, 9)).unwrap();
        assert_eq!(small, render_fields(&FieldsConfig::new(3, 9)).unwrap());
        assert_eq!(small, large.subset(&[0, 1, 2]));
        assert_eq!(large.names[4], "field_00004");
        assert_eq!(large.classes(), ["galaxy".to_string()]);
        let other = render_fields(&FieldsConfig::new(3, 10)).unwrap();
        assert_ne!(small.images.images, other.images.images);
    }
}
