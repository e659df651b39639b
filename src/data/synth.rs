//! A synthetic Galaxy10: physically motivated renderings of the ten SDSS (or DECaLS) classes,
//! the default dataset when the real file is absent.
//!
//! Each image is a small scene in three bands (g, r, i): Sérsic bulges and ellipticals,
//! exponential discs seen at a random inclination, logarithmic spiral arms whose pitch depends
//! on the class, bars, edge-on discs with or without bulge and dust lane, mergers with tidal
//! tails, disturbed clumpy discs, a faint companion now and then and field stars. The scene is
//! convolved with a Gaussian PSF, sits on a sky with Poisson and read noise, and is mapped to
//! RGB with Lupton's asinh stretch like SDSS colour cutouts. Class parameter ranges overlap a
//! little near the boundaries and faint, small galaxies hide their arms, so the task is
//! learnable but not trivial (see docs/decisions.md, data for the knobs and measured figures).
//!
//! Image `i` of a set depends only on (seed, i, its class): every image has its own ChaCha
//! stream, so synthesis is deterministic and parallel.

use super::{DataError, ImageSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::f32::consts::PI;

/// The ten class names of astroNN's Galaxy10 (SDSS), in label order.
pub const SDSS_CLASSES: [&str; 10] = [
    "Disk, Face-on, No Spiral",
    "Smooth, Completely round",
    "Smooth, in-between round",
    "Smooth, Cigar shaped",
    "Disk, Edge-on, Rounded Bulge",
    "Disk, Edge-on, Boxy Bulge",
    "Disk, Edge-on, No Bulge",
    "Disk, Face-on, Tight Spiral",
    "Disk, Face-on, Medium Spiral",
    "Disk, Face-on, Loose Spiral",
];

/// Image counts per class as astroNN documents Galaxy10 (SDSS). They sum to 21,830 while the
/// file holds 21,785 images, so they serve as proportions.
pub const SDSS_COUNTS: [usize; 10] = [3461, 6997, 6292, 394, 1534, 17, 589, 1121, 906, 519];

/// The ten class names of Galaxy10 DECaLS, in label order.
pub const DECALS_CLASSES: [&str; 10] = [
    "Disturbed",
    "Merging",
    "Round Smooth",
    "In-between Round Smooth",
    "Cigar Shaped Smooth",
    "Barred Spiral",
    "Unbarred Tight Spiral",
    "Unbarred Loose Spiral",
    "Edge-on without Bulge",
    "Edge-on with Bulge",
];

/// Image counts per class in the real Galaxy10_DECals.h5 (17,736 images).
pub const DECALS_COUNTS: [usize; 10] = [1081, 1853, 2645, 2027, 334, 2043, 1829, 2628, 1423, 1873];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SynthKind {
    /// Galaxy10 (SDSS): 69×69, the SDSS class list and proportions.
    Galaxy10,
    /// Galaxy10 DECaLS: 256×256 by default, the DECaLS class list and proportions.
    Galaxy10Decals,
}

impl SynthKind {
    pub fn class_names(self) -> &'static [&'static str; 10] {
        match self {
            SynthKind::Galaxy10 => &SDSS_CLASSES,
            SynthKind::Galaxy10Decals => &DECALS_CLASSES,
        }
    }

    pub fn real_counts(self) -> &'static [usize; 10] {
        match self {
            SynthKind::Galaxy10 => &SDSS_COUNTS,
            SynthKind::Galaxy10Decals => &DECALS_COUNTS,
        }
    }

    pub fn default_size(self) -> usize {
        match self {
            SynthKind::Galaxy10 => 69,
            SynthKind::Galaxy10Decals => 256,
        }
    }
}

/// What to synthesize. Every number that changes the pixels is here, so a stage can
/// fingerprint it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    pub kind: SynthKind,
    pub count: usize,
    pub seed: u64,
    /// Image side in pixels; `None` takes the kind's real size (69 or 256).
    #[serde(default)]
    pub size: Option<usize>,
    /// Relative class frequencies; `None` takes the real file's proportions.
    #[serde(default)]
    pub proportions: Option<Vec<f64>>,
    /// Multiplies the noise relative to the galaxies (1.0: the calibrated default).
    #[serde(default = "one")]
    pub noise: f32,
    /// Widens every class's parameter ranges into its neighbours' (0: disjoint ranges,
    /// 1: the calibrated default).
    #[serde(default = "one")]
    pub ambiguity: f32,
}

fn one() -> f32 {
    1.0
}

impl SynthConfig {
    pub fn galaxy10(count: usize, seed: u64) -> Self {
        SynthConfig {
            kind: SynthKind::Galaxy10,
            count,
            seed,
            size: None,
            proportions: None,
            noise: 1.0,
            ambiguity: 1.0,
        }
    }

    pub fn side(&self) -> usize {
        self.size.unwrap_or(self.kind.default_size())
    }

    fn validate(&self) -> Result<(), DataError> {
        if self.side() < 16 || self.side() > 1024 {
            return Err(DataError::invalid(
                "synth size",
                format!("{} px is outside 16..=1024", self.side()),
            ));
        }
        if let Some(p) = &self.proportions {
            if p.len() != 10
                || p.iter().any(|x| !x.is_finite() || *x < 0.0)
                || p.iter().sum::<f64>() <= 0.0
            {
                return Err(DataError::invalid(
                    "synth proportions",
                    "need 10 non-negative numbers with a positive sum",
                ));
            }
        }
        if !(self.noise.is_finite()
            && self.noise > 0.0
            && self.ambiguity.is_finite()
            && self.ambiguity >= 0.0)
        {
            return Err(DataError::invalid(
                "synth knobs",
                "noise must be > 0 and ambiguity >= 0",
            ));
        }
        Ok(())
    }
}

/// Per-class counts for `count` images: largest-remainder apportionment of the proportions,
/// so counts given as weights come back exactly when `count` is their sum.
pub fn class_counts(weights: &[f64], count: usize) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| w / total * count as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut left = count - counts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Ties broken by class id so the result never depends on sort stability.
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &c in order.iter().cycle() {
        if left == 0 {
            break;
        }
        counts[c] += 1;
        left -= 1;
    }
    counts
}

/// The label of every image: the apportioned counts, shuffled by the seed.
pub fn synth_labels(config: &SynthConfig) -> Vec<u32> {
    let weights: Vec<f64> = match &config.proportions {
        Some(p) => p.clone(),
        None => config
            .kind
            .real_counts()
            .iter()
            .map(|&c| c as f64)
            .collect(),
    };
    let counts = class_counts(&weights, config.count);
    let mut labels: Vec<u32> = counts
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| std::iter::repeat_n(c as u32, n))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(u64::MAX);
    use rand::seq::SliceRandom;
    labels.shuffle(&mut rng);
    labels
}

/// Synthesizes the whole set in parallel.
pub fn synthesize(config: &SynthConfig) -> Result<ImageSet, DataError> {
    config.validate()?;
    let side = config.side();
    let labels = synth_labels(config);
    let image_len = side * side * 3;
    let mut images = vec![0u8; config.count * image_len];
    images
        .par_chunks_mut(image_len)
        .enumerate()
        .with_min_len(8)
        .for_each(|(index, out)| {
            render_into(config, index, labels[index], out);
        });
    Ok(ImageSet {
        height: side,
        width: side,
        channels: 3,
        images,
        labels,
        class_names: config
            .kind
            .class_names()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    })
}

/// Renders image `index` of class `class` into `out` (side×side×3 uint8, HWC).
pub fn render_into(config: &SynthConfig, index: usize, class: u32, out: &mut [u8]) {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(index as u64);
    let side = config.side();
    let knobs = Knobs {
        scale: side as f32 / 69.0,
        ambiguity: config.ambiguity,
        centre: (side as f32 - 1.0) / 2.0,
    };
    let scene = match config.kind {
        SynthKind::Galaxy10 => sdss_scene(class, &mut rng, &knobs),
        SynthKind::Galaxy10Decals => decals_scene(class, &mut rng, &knobs),
    };
    let bands = render_scene(&scene, side, config.noise, &mut rng, &knobs);
    to_rgb(&bands, out);
}

// ---------------------------------------------------------------------------------------------
// Scene description

struct Knobs {
    /// Lengths are drawn for a 69-pixel image and scaled by this.
    scale: f32,
    ambiguity: f32,
    centre: f32,
}

impl Knobs {
    /// A uniform draw from [lo, hi] widened by `ambiguity × margin` on both sides: the overlap
    /// between neighbouring classes.
    fn blur(&self, rng: &mut ChaCha8Rng, lo: f32, hi: f32, margin: f32) -> f32 {
        let m = self.ambiguity * margin;
        rng.gen_range(lo - m..=hi + m)
    }
}

/// Colours as relative flux in (g, r, i).
const OLD_STARS: [f32; 3] = [0.55, 1.0, 1.3];
const DISC_STARS: [f32; 3] = [0.8, 1.0, 1.15];
const YOUNG_STARS: [f32; 3] = [1.25, 1.0, 0.8];

#[derive(Clone, Copy)]
struct Frame {
    cx: f32,
    cy: f32,
    cos: f32,
    sin: f32,
    /// 1 / cos(inclination): stretches the minor axis back into the disc plane.
    deproject: f32,
}

impl Frame {
    fn new(cx: f32, cy: f32, angle: f32, cos_incl: f32) -> Self {
        Frame {
            cx,
            cy,
            cos: angle.cos(),
            sin: angle.sin(),
            deproject: 1.0 / cos_incl.max(1e-3),
        }
    }

    #[inline]
    fn plane(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (x - self.cx, y - self.cy);
        (
            dx * self.cos + dy * self.sin,
            (-dx * self.sin + dy * self.cos) * self.deproject,
        )
    }

    /// Image position of a point given in plane coordinates.
    fn image(&self, u: f32, v: f32) -> (f32, f32) {
        let v = v / self.deproject;
        (
            self.cx + u * self.cos - v * self.sin,
            self.cy + u * self.sin + v * self.cos,
        )
    }
}

#[derive(Clone, Copy)]
enum Radial {
    Sersic { re: f32, inv_n: f32, bn: f32 },
    Exponential { h: f32 },
}

#[derive(Clone, Copy)]
struct Arms {
    m: f32,
    cot_pitch: f32,
    phase: f32,
    /// Fraction of the disc light moved into the arms.
    strength: f32,
    /// Exponent on the arm pattern: larger is narrower arms.
    sharpness: f32,
    /// Arms start here (bulge or bar radius).
    r_in: f32,
    scale: f32,
}

#[derive(Clone, Copy)]
struct Profile {
    frame: Frame,
    /// Rotation inside the plane (a bar's angle relative to the line of nodes).
    in_plane: (f32, f32),
    q: f32,
    /// Generalised-ellipse exponent: 2 is an ellipse, larger is boxier.
    boxy: f32,
    radial: Radial,
    /// Surface brightness scale (set so the profile's total flux is `flux`).
    amp: f32,
    colour: [f32; 3],
    arms: Option<Arms>,
}

#[derive(Clone, Copy)]
struct Blob {
    x: f32,
    y: f32,
    sigma: f32,
    flux: f32,
    colour: [f32; 3],
}

struct Dust {
    frame: Frame,
    width: f32,
    length: f32,
    tau: [f32; 3],
}

#[derive(Default)]
struct Scene {
    profiles: Vec<Profile>,
    blobs: Vec<Blob>,
    dust: Vec<Dust>,
}

fn ln_gamma(x: f64) -> f64 {
    // Lanczos (g = 7, n = 9): plenty for Sérsic normalisation.
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

fn sersic_bn(n: f32) -> f32 {
    2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25_515.0 * n * n)
}

impl Profile {
    fn sersic(frame: Frame, re: f32, n: f32, q: f32, flux: f32, colour: [f32; 3]) -> Self {
        let bn = sersic_bn(n);
        // Total flux of a Sérsic profile with I(re) = 1 and axis ratio q.
        let (nf, bf) = (n as f64, bn as f64);
        let unit = 2.0
            * std::f64::consts::PI
            * (q * re * re) as f64
            * nf
            * bf.exp()
            * (ln_gamma(2.0 * nf) - 2.0 * nf * bf.ln()).exp();
        Profile {
            frame,
            in_plane: (1.0, 0.0),
            q,
            boxy: 2.0,
            radial: Radial::Sersic {
                re,
                inv_n: 1.0 / n,
                bn,
            },
            amp: flux / unit as f32,
            colour,
            arms: None,
        }
    }

    fn exponential(frame: Frame, h: f32, q: f32, flux: f32, colour: [f32; 3]) -> Self {
        Profile {
            frame,
            in_plane: (1.0, 0.0),
            q,
            boxy: 2.0,
            radial: Radial::Exponential { h },
            amp: flux / (2.0 * PI * q * h * h),
            colour,
            arms: None,
        }
    }

    /// Adds this profile's light at every pixel of the three bands.
    fn render(&self, side: usize, bands: &mut [Vec<f32>; 3]) {
        let (ci, si) = self.in_plane;
        let inv_q = 1.0 / self.q;
        for y in 0..side {
            for x in 0..side {
                let (u, v) = self.frame.plane(x as f32, y as f32);
                let (a, b) = (u * ci + v * si, -u * si + v * ci);
                let r = if self.boxy == 2.0 {
                    (a * a + b * b * inv_q * inv_q + 0.25).sqrt()
                } else {
                    (a.abs().powf(self.boxy) + (b * inv_q).abs().powf(self.boxy))
                        .powf(1.0 / self.boxy)
                        + 0.3
                };
                let base = match self.radial {
                    Radial::Sersic { re, inv_n, bn } => {
                        self.amp * (-bn * ((r / re).powf(inv_n) - 1.0)).exp()
                    }
                    Radial::Exponential { h } => self.amp * (-r / h).exp(),
                };
                if base < 1e-7 {
                    continue;
                }
                let i = y * side + x;
                match &self.arms {
                    None => {
                        for (band, colour) in bands.iter_mut().zip(self.colour) {
                            band[i] += base * colour;
                        }
                    }
                    Some(arms) => {
                        let rp = (u * u + v * v).sqrt().max(1e-3);
                        let theta = v.atan2(u);
                        let phi = theta - arms.cot_pitch * (rp / arms.scale).ln() - arms.phase;
                        let pattern = (0.5 * (1.0 + (arms.m * phi).cos())).powf(arms.sharpness);
                        let t = ((rp - arms.r_in) / (0.5 * arms.r_in + 1.0)).clamp(0.0, 1.0);
                        let ramp = t * t * (3.0 - 2.0 * t);
                        let moved = arms.strength * ramp;
                        // The arms carry young blue light; the smooth disc keeps the rest.
                        let arm_light = base * moved * pattern * 2.5;
                        let disc_light = base * (1.0 - moved);
                        for band in 0..3 {
                            bands[band][i] +=
                                disc_light * self.colour[band] + arm_light * YOUNG_STARS[band];
                        }
                    }
                }
            }
        }
    }
}

fn render_blob(blob: &Blob, side: usize, bands: &mut [Vec<f32>; 3]) {
    let reach = (3.5 * blob.sigma).ceil() as i64;
    let (x0, y0) = (blob.x.round() as i64, blob.y.round() as i64);
    let norm = blob.flux / (2.0 * PI * blob.sigma * blob.sigma);
    let k = -0.5 / (blob.sigma * blob.sigma);
    for y in (y0 - reach).max(0)..=(y0 + reach).min(side as i64 - 1) {
        for x in (x0 - reach).max(0)..=(x0 + reach).min(side as i64 - 1) {
            let (dx, dy) = (x as f32 - blob.x, y as f32 - blob.y);
            let w = norm * (k * (dx * dx + dy * dy)).exp();
            let i = y as usize * side + x as usize;
            for (band, colour) in bands.iter_mut().zip(blob.colour) {
                band[i] += w * colour;
            }
        }
    }
}

fn apply_dust(dust: &Dust, side: usize, bands: &mut [Vec<f32>; 3]) {
    for y in 0..side {
        for x in 0..side {
            let (u, v) = dust.frame.plane(x as f32, y as f32);
            let depth =
                (-0.5 * (v / dust.width).powi(2)).exp() * (-(u / dust.length).powi(2)).exp();
            if depth < 1e-4 {
                continue;
            }
            let i = y * side + x;
            for (band, tau) in bands.iter_mut().zip(dust.tau) {
                band[i] *= (-tau * depth).exp();
            }
        }
    }
}

fn tint(rng: &mut ChaCha8Rng, colour: [f32; 3], amount: f32) -> [f32; 3] {
    // Redder or bluer overall (dust, redshift, population age).
    let t: f32 = rng.gen_range(-amount..=amount);
    [
        colour[0] * (1.0 - t),
        colour[1],
        colour[2] * (1.0 + 0.7 * t),
    ]
}

fn centre_frame(rng: &mut ChaCha8Rng, k: &Knobs, cos_incl: f32) -> Frame {
    let jitter = 0.8 * k.scale;
    let cx = k.centre + jitter * rng.sample::<f32, _>(StandardNormal);
    let cy = k.centre + jitter * rng.sample::<f32, _>(StandardNormal);
    Frame::new(cx, cy, rng.gen_range(0.0..PI), cos_incl)
}

/// A smooth spheroid with axis ratio drawn from [q_lo, q_hi].
fn elliptical(
    scene: &mut Scene,
    rng: &mut ChaCha8Rng,
    k: &Knobs,
    q: f32,
    n_range: (f32, f32),
    flux: f32,
) {
    let frame = centre_frame(rng, k, 1.0);
    let re = log_uniform(rng, 3.0, 10.0) * k.scale;
    let n = rng.gen_range(n_range.0..=n_range.1);
    let colour = tint(rng, OLD_STARS, 0.12);
    scene.profiles.push(Profile::sersic(
        frame,
        re,
        n,
        q.clamp(0.12, 1.0),
        flux,
        colour,
    ));
    // Some ellipticals have a faint outer envelope, rounder than the core.
    if rng.gen_bool(0.3) {
        let q_env = (q + rng.gen_range(0.0..0.15)).min(1.0);
        scene.profiles.push(Profile::sersic(
            frame,
            re * 2.5,
            1.0,
            q_env,
            flux * 0.3,
            colour,
        ));
    }
}

struct DiscSpec {
    cos_incl: (f32, f32),
    bulge_fraction: (f32, f32),
    arms: Option<ArmSpec>,
    bar_probability: f64,
}

struct ArmSpec {
    pitch_deg: (f32, f32),
    strength: (f32, f32),
    arm_counts: &'static [f32],
    clumps: usize,
}

/// An exponential disc with an optional Sérsic bulge, bar and spiral arms, at a random
/// orientation and inclination.
fn disc_galaxy(
    scene: &mut Scene,
    rng: &mut ChaCha8Rng,
    k: &Knobs,
    spec: &DiscSpec,
    flux: f32,
) -> Frame {
    let cos_incl = rng
        .gen_range(spec.cos_incl.0..=spec.cos_incl.1)
        .clamp(0.05, 1.0);
    let frame = centre_frame(rng, k, cos_incl);
    let h = log_uniform(rng, 3.5, 10.0) * k.scale;
    let bt = rng
        .gen_range(spec.bulge_fraction.0..=spec.bulge_fraction.1)
        .clamp(0.0, 0.9);
    let disc_colour = tint(rng, DISC_STARS, 0.1);
    let mut disc = Profile::exponential(frame, h, 1.0, flux * (1.0 - bt), disc_colour);
    let bulge_re = h * rng.gen_range(0.25..0.5);
    let mut r_in = bulge_re * 1.5;
    if rng.gen_bool(spec.bar_probability) {
        let bar_len = h * rng.gen_range(0.9..1.8);
        let angle: f32 = rng.gen_range(0.0..PI);
        let mut bar = Profile::sersic(
            frame,
            bar_len * 0.55,
            0.5,
            rng.gen_range(0.2..0.35),
            flux * rng.gen_range(0.08..0.16),
            tint(rng, OLD_STARS, 0.1),
        );
        bar.in_plane = (angle.cos(), angle.sin());
        scene.profiles.push(bar);
        r_in = r_in.max(bar_len);
        if let Some(arms) = &spec.arms {
            disc.arms = Some(draw_arms(rng, arms, h, r_in, k));
            // Arms start at the bar's ends.
            if let Some(a) = disc.arms.as_mut() {
                a.phase = angle - a.cot_pitch * (bar_len / h).ln();
            }
        }
    } else if let Some(arms) = &spec.arms {
        disc.arms = Some(draw_arms(rng, arms, h, r_in, k));
    }
    if let (Some(arms), Some(spec_arms)) = (disc.arms, &spec.arms) {
        // Star-forming knots along the arms.
        for _ in 0..spec_arms.clumps {
            let rp = rng.gen_range(arms.r_in..(3.0 * h).max(arms.r_in + 1.0));
            let j = rng.gen_range(0..arms.m as usize) as f32;
            let theta = arms.cot_pitch * (rp / h).ln()
                + arms.phase
                + 2.0 * PI * j / arms.m
                + rng.gen_range(-0.15..0.15);
            let (x, y) = frame.image(rp * theta.cos(), rp * theta.sin());
            let clump_flux = flux * rng.gen_range(0.004..0.015);
            scene.blobs.push(Blob {
                x,
                y,
                sigma: rng.gen_range(0.4..0.9) * k.scale,
                flux: clump_flux,
                colour: YOUNG_STARS,
            });
        }
    }
    scene.profiles.push(disc);
    if bt > 0.0 {
        let bulge_frame = Frame::new(frame.cx, frame.cy, frame.sin.atan2(frame.cos), 1.0);
        let q = rng.gen_range(0.75..1.0);
        scene.profiles.push(Profile::sersic(
            bulge_frame,
            bulge_re,
            rng.gen_range(1.5..4.0),
            q,
            flux * bt,
            tint(rng, OLD_STARS, 0.1),
        ));
    }
    frame
}

fn draw_arms(rng: &mut ChaCha8Rng, spec: &ArmSpec, h: f32, r_in: f32, k: &Knobs) -> Arms {
    let pitch = k
        .blur(rng, spec.pitch_deg.0, spec.pitch_deg.1, 2.5)
        .clamp(4.0, 50.0)
        .to_radians();
    let m = spec.arm_counts[rng.gen_range(0..spec.arm_counts.len())];
    Arms {
        m,
        cot_pitch: 1.0 / pitch.tan(),
        phase: rng.gen_range(0.0..2.0 * PI),
        strength: rng.gen_range(spec.strength.0..=spec.strength.1),
        sharpness: rng.gen_range(2.0..6.0),
        r_in,
        scale: h,
    }
}

/// A disc seen within a few degrees of edge-on, with a bulge of the given kind.
fn edge_on(scene: &mut Scene, rng: &mut ChaCha8Rng, k: &Knobs, bulge: EdgeBulge, flux: f32) {
    let incl = k.blur(rng, 80.0, 90.0, 3.0).min(90.0).to_radians();
    let thickness = rng.gen_range(0.07..0.16);
    let q = (incl.cos().powi(2) + (thickness * incl.sin()).powi(2)).sqrt();
    let frame = centre_frame(rng, k, 1.0);
    let h = log_uniform(rng, 4.0, 11.0) * k.scale;
    let bt = match bulge {
        EdgeBulge::None => k.blur(rng, 0.0, 0.04, 0.05).max(0.0),
        EdgeBulge::Rounded | EdgeBulge::Boxy => k.blur(rng, 0.18, 0.55, 0.06),
    };
    scene.profiles.push(Profile::exponential(
        frame,
        h,
        q,
        flux * (1.0 - bt),
        tint(rng, DISC_STARS, 0.1),
    ));
    if bt > 0.0 {
        let re = h * rng.gen_range(0.3..0.55);
        let mut b = Profile::sersic(
            frame,
            re,
            rng.gen_range(1.5..4.0),
            rng.gen_range(0.6..0.95),
            flux * bt,
            tint(rng, OLD_STARS, 0.1),
        );
        if bulge == EdgeBulge::Boxy {
            b.boxy = rng.gen_range(2.8..4.5);
        }
        scene.profiles.push(b);
    }
    if rng.gen_bool(0.5) {
        let tau = rng.gen_range(0.4..1.5);
        scene.dust.push(Dust {
            frame,
            width: (h * q * 0.35).max(0.4 * k.scale),
            length: h * 2.5,
            tau: [tau * 1.3, tau, tau * 0.75],
        });
    }
}

#[derive(Clone, Copy, PartialEq)]
enum EdgeBulge {
    None,
    Rounded,
    Boxy,
}

/// Two overlapping systems with tidal tails.
fn merger(scene: &mut Scene, rng: &mut ChaCha8Rng, k: &Knobs, flux: f32) {
    let ratio = rng.gen_range(0.25..1.0);
    let sep = rng.gen_range(4.0..14.0) * k.scale;
    let angle: f32 = rng.gen_range(0.0..2.0 * PI);
    let (c, s) = (k.centre, sep * 0.5);
    let centres = [
        (c - s * angle.cos(), c - s * angle.sin()),
        (c + s * angle.cos(), c + s * angle.sin()),
    ];
    for (j, &(cx, cy)) in centres.iter().enumerate() {
        let f = if j == 0 {
            flux / (1.0 + ratio)
        } else {
            flux * ratio / (1.0 + ratio)
        };
        let frame = Frame::new(cx, cy, rng.gen_range(0.0..PI), rng.gen_range(0.4..1.0));
        let re = log_uniform(rng, 2.0, 6.0) * k.scale;
        scene.profiles.push(Profile::sersic(
            frame,
            re,
            rng.gen_range(1.0..4.0),
            rng.gen_range(0.5..1.0),
            f,
            tint(rng, OLD_STARS, 0.15),
        ));
        // A tidal tail: a curved, fading stream of light leaving each galaxy.
        if j == 0 || rng.gen_bool(0.6) {
            let dir = rng.gen_range(0.0..2.0 * PI);
            let curl = rng.gen_range(0.8..2.0) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
            let length = rng.gen_range(10.0..24.0) * k.scale;
            let steps = 24;
            for t in 0..steps {
                let tt = t as f32 / steps as f32;
                let r = re + tt * length;
                let theta = dir + curl * tt;
                scene.blobs.push(Blob {
                    x: cx + r * theta.cos(),
                    y: cy + r * theta.sin(),
                    sigma: (1.0 + 1.5 * tt) * k.scale,
                    flux: f * 0.012 * (1.0 - 0.7 * tt),
                    colour: DISC_STARS,
                });
            }
        }
    }
}

/// A lopsided disc with bright asymmetric clumps.
fn disturbed(scene: &mut Scene, rng: &mut ChaCha8Rng, k: &Knobs, flux: f32) {
    let spec = DiscSpec {
        cos_incl: (0.4, 1.0),
        bulge_fraction: (0.0, 0.2),
        arms: None,
        bar_probability: 0.0,
    };
    let frame = disc_galaxy(scene, rng, k, &spec, flux * 0.7);
    let side_angle: f32 = rng.gen_range(0.0..2.0 * PI);
    let clumps = rng.gen_range(3..10);
    for _ in 0..clumps {
        // Clumps crowd to one side: the disc's light is not symmetric.
        let a = side_angle + rng.gen_range(-1.2..1.2);
        let r = rng.gen_range(2.0..12.0) * k.scale;
        scene.blobs.push(Blob {
            x: frame.cx + r * a.cos(),
            y: frame.cy + r * a.sin(),
            sigma: rng.gen_range(0.6..2.0) * k.scale,
            flux: flux * 0.3 / clumps as f32 * rng.gen_range(0.5..1.5),
            colour: tint(rng, YOUNG_STARS, 0.15),
        });
    }
}

fn sdss_scene(class: u32, rng: &mut ChaCha8Rng, k: &Knobs) -> Scene {
    let mut scene = sdss_galaxy(class, rng, k);
    add_surroundings(&mut scene, rng, k);
    scene
}

/// The galaxy of an SDSS image alone: no companion (`sdss_scene` adds it, drawing after it).
fn sdss_galaxy(class: u32, rng: &mut ChaCha8Rng, k: &Knobs) -> Scene {
    let mut scene = Scene::default();
    let flux = 1.0;
    let spiral =
        |pitch: (f32, f32), strength: (f32, f32), counts: &'static [f32], clumps: usize| ArmSpec {
            pitch_deg: pitch,
            strength,
            arm_counts: counts,
            clumps,
        };
    match class {
        0 => {
            let weak = if rng.gen_bool(0.35) {
                Some(spiral(
                    (8.0, 30.0),
                    (0.0, 0.08 + 0.06 * k.ambiguity),
                    &[2.0],
                    0,
                ))
            } else {
                None
            };
            let spec = DiscSpec {
                cos_incl: (0.45, 1.0),
                bulge_fraction: (0.05, 0.4),
                arms: weak,
                bar_probability: 0.2,
            };
            disc_galaxy(&mut scene, rng, k, &spec, flux);
        }
        1 => {
            let q = k.blur(rng, 0.8, 1.0, 0.05).min(1.0);
            elliptical(&mut scene, rng, k, q, (2.0, 6.0), flux);
        }
        2 => {
            let q = k.blur(rng, 0.5, 0.8, 0.05);
            elliptical(&mut scene, rng, k, q, (1.5, 5.0), flux);
        }
        3 => {
            let q = k.blur(rng, 0.2, 0.45, 0.05);
            elliptical(&mut scene, rng, k, q, (1.0, 4.0), flux);
        }
        4 => edge_on(&mut scene, rng, k, EdgeBulge::Rounded, flux),
        5 => edge_on(&mut scene, rng, k, EdgeBulge::Boxy, flux),
        6 => edge_on(&mut scene, rng, k, EdgeBulge::None, flux),
        7..=9 => {
            let (pitch, bulge, counts, clumps): ((f32, f32), (f32, f32), &'static [f32], usize) =
                match class {
                    7 => ((6.0, 14.0), (0.15, 0.5), &[2.0, 2.0, 2.0, 3.0], 2),
                    8 => ((14.0, 23.0), (0.08, 0.35), &[2.0, 2.0, 3.0, 4.0], 4),
                    _ => ((23.0, 38.0), (0.0, 0.2), &[2.0, 3.0, 4.0], 8),
                };
            let spec = DiscSpec {
                cos_incl: (0.4, 1.0),
                bulge_fraction: bulge,
                arms: Some(spiral(pitch, (0.3, 0.85), counts, clumps)),
                bar_probability: 0.3,
            };
            disc_galaxy(&mut scene, rng, k, &spec, flux);
        }
        _ => unreachable!("labels come from synth_labels, always < 10"),
    }
    scene
}

fn decals_scene(class: u32, rng: &mut ChaCha8Rng, k: &Knobs) -> Scene {
    let mut scene = Scene::default();
    let flux = 1.0;
    let arms = |pitch: (f32, f32), clumps: usize| ArmSpec {
        pitch_deg: pitch,
        strength: (0.25, 0.85),
        arm_counts: &[2.0, 2.0, 3.0],
        clumps,
    };
    match class {
        0 => disturbed(&mut scene, rng, k, flux),
        1 => merger(&mut scene, rng, k, flux),
        2 => {
            let q = k.blur(rng, 0.8, 1.0, 0.05).min(1.0);
            elliptical(&mut scene, rng, k, q, (2.0, 6.0), flux);
        }
        3 => {
            let q = k.blur(rng, 0.5, 0.8, 0.05);
            elliptical(&mut scene, rng, k, q, (1.5, 5.0), flux);
        }
        4 => {
            let q = k.blur(rng, 0.2, 0.45, 0.05);
            elliptical(&mut scene, rng, k, q, (1.0, 4.0), flux);
        }
        5 => {
            let spec = DiscSpec {
                cos_incl: (0.45, 1.0),
                bulge_fraction: (0.05, 0.35),
                arms: Some(arms((8.0, 30.0), 4)),
                bar_probability: 1.0,
            };
            disc_galaxy(&mut scene, rng, k, &spec, flux);
        }
        6 | 7 => {
            let (pitch, bulge, clumps) = if class == 6 {
                ((6.0, 17.0), (0.1, 0.45), 2)
            } else {
                ((17.0, 38.0), (0.0, 0.25), 8)
            };
            let spec = DiscSpec {
                cos_incl: (0.45, 1.0),
                bulge_fraction: bulge,
                arms: Some(arms(pitch, clumps)),
                bar_probability: 0.0,
            };
            disc_galaxy(&mut scene, rng, k, &spec, flux);
        }
        8 => edge_on(&mut scene, rng, k, EdgeBulge::None, flux),
        9 => {
            let bulge = if rng.gen_bool(0.8) {
                EdgeBulge::Rounded
            } else {
                EdgeBulge::Boxy
            };
            edge_on(&mut scene, rng, k, bulge, flux)
        }
        _ => unreachable!("labels come from synth_labels, always < 10"),
    }
    add_surroundings(&mut scene, rng, k);
    scene
}

/// A faint companion galaxy now and then; field stars are added after the brightness is set.
fn add_surroundings(scene: &mut Scene, rng: &mut ChaCha8Rng, k: &Knobs) {
    if rng.gen_bool(0.15) {
        let side = 2.0 * k.centre + 1.0;
        let (x, y) = (rng.gen_range(0.0..side), rng.gen_range(0.0..side));
        let frame = Frame::new(x, y, rng.gen_range(0.0..PI), 1.0);
        let re = log_uniform(rng, 0.8, 2.5) * k.scale;
        scene.profiles.push(Profile::sersic(
            frame,
            re,
            rng.gen_range(1.0..4.0),
            rng.gen_range(0.4..1.0),
            rng.gen_range(0.02..0.1),
            tint(rng, OLD_STARS, 0.2),
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Imaging: PSF, sky, noise, stretch

/// Sky noise per pixel (counts): the unit of every brightness below.
pub(super) const SKY_SIGMA: f32 = 10.0;
const SKY_LEVEL: f32 = SKY_SIGMA * SKY_SIGMA;
const READ_NOISE: f32 = 3.0;
/// Display softening and full scale of the asinh stretch, in sky sigmas.
const SOFTENING: f32 = 2.0;
const FULL_SCALE: f32 = 80.0;

fn render_scene(
    scene: &Scene,
    side: usize,
    noise: f32,
    rng: &mut ChaCha8Rng,
    k: &Knobs,
) -> [Vec<f32>; 3] {
    let fwhm = rng.gen_range(1.0..2.2) * k.scale;
    let sigma = fwhm / 2.355;
    let mut bands = noiseless(scene, side, sigma);
    // Brightness: the galaxy's peak surface brightness in sky sigmas, over a wide range, so
    // faint galaxies hide their arms in the noise.
    let peak = bands[1].iter().cloned().fold(0f32, f32::max).max(1e-12);
    let snr = log_uniform(rng, 10.0, 200.0) / noise;
    let gain = snr * SKY_SIGMA / peak;
    for band in bands.iter_mut() {
        band.iter_mut().for_each(|v| *v *= gain);
    }
    // Field stars: point sources through the same PSF.
    let stars = Poisson::new(0.7 * k.scale * k.scale)
        .map(|p| p.sample(rng) as usize)
        .unwrap_or(0);
    for _ in 0..stars {
        let (colour, peak) = star_look(rng, 3.0);
        let at = (
            rng.gen_range(0.0..side as f32),
            rng.gen_range(0.0..side as f32),
        );
        add_star(&mut bands, side, at, sigma, peak, colour);
    }
    for band in bands.iter_mut() {
        add_sky_noise(band, rng);
    }
    bands
}

/// A scene's light before brightness and noise: its components, then the PSF (a Gaussian of
/// `sigma` px in r, a little wider in g and narrower in i).
fn noiseless(scene: &Scene, side: usize, sigma: f32) -> [Vec<f32>; 3] {
    let n = side * side;
    let mut bands = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
    for p in &scene.profiles {
        p.render(side, &mut bands);
    }
    for b in &scene.blobs {
        render_blob(b, side, &mut bands);
    }
    for d in &scene.dust {
        apply_dust(d, side, &mut bands);
    }
    for (band, widen) in bands.iter_mut().zip([1.08f32, 1.0, 0.95]) {
        gaussian_blur(band, side, sigma * widen);
    }
    bands
}

/// A field star's colour (g, r, i relative to r) and peak in counts: log-uniform from
/// `peak_lo` to 100 × `peak_lo` sky sigmas.
pub(super) fn star_look(rng: &mut ChaCha8Rng, peak_lo: f32) -> ([f32; 3], f32) {
    let colour = [rng.gen_range(0.5..1.4), 1.0, rng.gen_range(0.8..1.3)];
    let peak = log_uniform(rng, peak_lo, 100.0 * peak_lo) * SKY_SIGMA;
    (colour, peak)
}

/// A point source with a peak of `peak` counts at (x, y), through a Gaussian PSF of `sigma`
/// px, added to a `side`² image.
pub(super) fn add_star(
    bands: &mut [Vec<f32>; 3],
    side: usize,
    (x, y): (f32, f32),
    sigma: f32,
    peak: f32,
    colour: [f32; 3],
) {
    let star = Blob {
        x,
        y,
        sigma,
        flux: peak * 2.0 * PI * sigma * sigma,
        colour,
    };
    render_blob(&star, side, bands);
}

/// Sky with Poisson photon noise and Gaussian read noise, then sky-subtracted. Counts are
/// large (sky = 100), so the Poisson draw uses its normal limit except in faint pixels.
pub(super) fn add_sky_noise(band: &mut [f32], rng: &mut ChaCha8Rng) {
    for v in band.iter_mut() {
        let expected = (*v + SKY_LEVEL).max(0.0);
        let photons = if expected < 30.0 {
            Poisson::new(expected.max(1e-6))
                .map(|p| p.sample(rng))
                .unwrap_or(0.0)
        } else {
            expected + expected.sqrt() * rng.sample::<f32, _>(StandardNormal)
        };
        *v = photons + READ_NOISE * rng.sample::<f32, _>(StandardNormal) - SKY_LEVEL;
    }
}

/// A Galaxy10 (SDSS) galaxy of `class` on its own (no companion, stars or noise), its lengths
/// drawn for a 69-px image times `scale`, centred (with the images' jitter) in a `side`²
/// stamp, through the PSF of `psf_sigma` px, scaled so its r-band peak is 1.
pub(super) fn galaxy_stamp(
    class: u32,
    scale: f32,
    side: usize,
    psf_sigma: f32,
    rng: &mut ChaCha8Rng,
) -> [Vec<f32>; 3] {
    let knobs = Knobs {
        scale,
        ambiguity: 1.0,
        centre: (side as f32 - 1.0) / 2.0,
    };
    let scene = sdss_galaxy(class, rng, &knobs);
    let mut bands = noiseless(&scene, side, psf_sigma);
    let peak = bands[1].iter().cloned().fold(0f32, f32::max).max(1e-12);
    for band in bands.iter_mut() {
        band.iter_mut().for_each(|v| *v /= peak);
    }
    bands
}

pub(super) fn log_uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    rng.gen_range(lo.ln()..=hi.ln()).exp()
}

fn gaussian_blur(band: &mut [f32], side: usize, sigma: f32) {
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let mut kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-0.5 * (i as f32 / sigma).powi(2)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let mut tmp = vec![0f32; band.len()];
    let last = side as i64 - 1;
    for y in 0..side {
        let row = &band[y * side..(y + 1) * side];
        for x in 0..side {
            let mut acc = 0.0;
            for (j, w) in kernel.iter().enumerate() {
                let xx = (x as i64 + j as i64 - radius).clamp(0, last) as usize;
                acc += w * row[xx];
            }
            tmp[y * side + x] = acc;
        }
    }
    for y in 0..side {
        for x in 0..side {
            let mut acc = 0.0;
            for (j, w) in kernel.iter().enumerate() {
                let yy = (y as i64 + j as i64 - radius).clamp(0, last) as usize;
                acc += w * tmp[yy * side + x];
            }
            band[y * side + x] = acc;
        }
    }
}

/// Lupton et al. (2004) asinh colour stretch: i→R, r→G, g→B, colour preserved when a pixel
/// saturates.
pub(super) fn to_rgb(bands: &[Vec<f32>; 3], out: &mut [u8]) {
    let balance = [1.15f32, 1.0, 0.85]; // g, r, i display weights
    let soft = SOFTENING * SKY_SIGMA;
    let norm = 1.0 / (FULL_SCALE / SOFTENING).asinh();
    for (i, px) in out.chunks_exact_mut(3).enumerate() {
        let (g, r, ii) = (
            bands[0][i] * balance[0],
            bands[1][i] * balance[1],
            bands[2][i] * balance[2],
        );
        let intensity = (g + r + ii) / 3.0;
        if intensity <= 0.0 {
            px.copy_from_slice(&[0, 0, 0]);
            continue;
        }
        let x = intensity / soft;
        let f = x.asinh() * norm / intensity;
        let mut rgb = [ii.max(0.0) * f, r.max(0.0) * f, g.max(0.0) * f];
        let top = rgb[0].max(rgb[1]).max(rgb[2]);
        if top > 1.0 {
            rgb.iter_mut().for_each(|c| *c /= top);
        }
        for (o, c) in px.iter_mut().zip(rgb) {
            *o = (c * 255.0 + 0.5) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_proportions_give_real_counts() {
        let w: Vec<f64> = SDSS_COUNTS.iter().map(|&c| c as f64).collect();
        assert_eq!(class_counts(&w, 21_830), SDSS_COUNTS.to_vec());
        assert_eq!(class_counts(&w, 21_785).iter().sum::<usize>(), 21_785);
        let small = class_counts(&w, 100);
        assert_eq!(small.iter().sum::<usize>(), 100);
        assert_eq!(small[1], 32); // 6997/21785*100 = 32.1
    }

    #[test]
    fn deterministic_per_seed_and_index() {
        let config = SynthConfig {
            proportions: Some(vec![1.0; 10]),
            ..SynthConfig::galaxy10(20, 3)
        };
        let a = synthesize(&config).unwrap();
        let b = synthesize(&config).unwrap();
        assert_eq!(a, b);
        let mut one = vec![0u8; a.image_len()];
        render_into(&config, 7, a.labels[7], &mut one);
        assert_eq!(one.as_slice(), a.image(7));
        let other = synthesize(&SynthConfig { seed: 4, ..config }).unwrap();
        assert_ne!(a.images, other.images);
        assert_eq!(a.class_names[0], "Disk, Face-on, No Spiral");
    }

    #[test]
    fn images_have_a_galaxy_in_the_middle_and_dark_sky() {
        let config = SynthConfig {
            proportions: Some(vec![1.0; 10]),
            ..SynthConfig::galaxy10(30, 11)
        };
        let set = synthesize(&config).unwrap();
        for i in 0..set.len() {
            let img = set.image(i);
            let mean_at = |x0: usize, y0: usize| -> f32 {
                let mut s = 0.0;
                for y in y0..y0 + 5 {
                    for x in x0..x0 + 5 {
                        s += img[(y * 69 + x) * 3 + 1] as f32;
                    }
                }
                s / 25.0
            };
            let centre = mean_at(32, 32);
            let corner = mean_at(0, 0)
                .min(mean_at(64, 0))
                .min(mean_at(0, 64))
                .min(mean_at(64, 64));
            assert!(
                centre > corner + 10.0,
                "image {i} (class {}): centre {centre}, corner {corner}",
                set.labels[i]
            );
        }
    }

    #[test]
    fn decals_kind_renders_at_its_size() {
        let config = SynthConfig {
            kind: SynthKind::Galaxy10Decals,
            size: Some(48),
            ..SynthConfig::galaxy10(10, 1)
        };
        let set = synthesize(&config).unwrap();
        assert_eq!((set.height, set.width, set.channels), (48, 48, 3));
        assert_eq!(set.class_names[1], "Merging");
    }

    #[test]
    fn rejects_bad_configs() {
        let bad = SynthConfig {
            proportions: Some(vec![1.0; 3]),
            ..SynthConfig::galaxy10(10, 1)
        };
        assert!(matches!(
            synthesize(&bad),
            Err(DataError::InvalidConfig { .. })
        ));
        let bad = SynthConfig {
            size: Some(4),
            ..SynthConfig::galaxy10(10, 1)
        };
        assert!(synthesize(&bad).is_err());
    }
}
