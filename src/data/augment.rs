//! Augmentation with Keras `ImageDataGenerator` semantics, plus astronomy extras.
//!
//! The geometric part follows Keras 3's `apply_affine_transform` (legacy preprocessing, also
//! Keras 2.x): rotation θ, shift (tx rows, ty columns), shear and zoom are composed as
//! `R · T · S · Z`, moved to the image centre (`size/2 − 0.5`), its x/y axes swapped
//! (`M' = P M P`, Keras's channels-last fix), and applied per channel like
//! `scipy.ndimage.affine_transform(order=1)`: each output pixel (r, c) samples the input at
//! `M'·(r, c, 1)` bilinearly, with scipy's boundary modes. Then horizontal and vertical flips
//! (p = 0.5 each), brightness (Keras: stretch to 0..255 then scale), and the extras: a random
//! multiple of 90°, Gaussian noise, and `rescale` like Keras's `standardize`.
//!
//! Every random choice comes from a ChaCha stream seeded by `sample_seed(stage seed, epoch,
//! sample)`, so an augmented epoch is reproducible and samples augment in parallel.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{DataError, ImageSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FillMode {
    /// Repeat the edge pixel (Keras's default).
    #[default]
    Nearest,
    /// `cval` outside the image.
    Constant,
    /// Half-sample symmetric: d c b a | a b c d | d c b a.
    Reflect,
    /// scipy's `wrap`: period `size − 1` (first and last samples overlap).
    Wrap,
}

/// One augmentation recipe. Ranges use Keras's conventions (degrees; a shift below 1 is a
/// fraction of the size, otherwise pixels; zoom draws x and y independently).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentSpec {
    pub rotation_range: f32,
    pub width_shift_range: f32,
    pub height_shift_range: f32,
    pub shear_range: f32,
    /// `[lo, hi]`; Keras's `zoom_range = z` is `[1 − z, 1 + z]`.
    pub zoom_range: [f32; 2],
    pub horizontal_flip: bool,
    pub vertical_flip: bool,
    pub fill_mode: FillMode,
    pub cval: f32,
    /// `[lo, hi]` brightness factor (Keras `brightness_range`).
    pub brightness_range: Option<[f32; 2]>,
    /// Rotate by a random multiple of 90° (lossless; galaxies have no up).
    pub rot90: bool,
    /// Standard deviation of added Gaussian noise, in grey levels (0..255 scale).
    pub noise_std: f32,
    /// Multiplies the result last (Keras `rescale`, e.g. 1/255).
    pub rescale: f32,
}

impl Default for AugmentSpec {
    fn default() -> Self {
        AugmentSpec {
            rotation_range: 0.0,
            width_shift_range: 0.0,
            height_shift_range: 0.0,
            shear_range: 0.0,
            zoom_range: [1.0, 1.0],
            horizontal_flip: false,
            vertical_flip: false,
            fill_mode: FillMode::Nearest,
            cval: 0.0,
            brightness_range: None,
            rot90: false,
            noise_std: 0.0,
            rescale: 1.0,
        }
    }
}

impl AugmentSpec {
    /// Keras `zoom_range` given as one float.
    pub fn zoom(z: f32) -> [f32; 2] {
        [1.0 - z, 1.0 + z]
    }

    pub fn validate(&self) -> Result<(), DataError> {
        let finite = [
            self.rotation_range,
            self.width_shift_range,
            self.height_shift_range,
            self.shear_range,
            self.cval,
            self.noise_std,
            self.rescale,
        ];
        if finite.iter().any(|v| !v.is_finite())
            || self.zoom_range.iter().any(|z| !z.is_finite() || *z <= 0.0)
        {
            return Err(DataError::invalid(
                "augmentation",
                "ranges must be finite and zoom positive",
            ));
        }
        if self.zoom_range[0] > self.zoom_range[1] {
            return Err(DataError::invalid(
                "augmentation",
                format!("zoom_range {:?} has lo > hi", self.zoom_range),
            ));
        }
        if let Some([lo, hi]) = self.brightness_range {
            if !(lo.is_finite() && hi.is_finite() && lo <= hi && lo >= 0.0) {
                return Err(DataError::invalid(
                    "augmentation",
                    "brightness_range must be 0 <= lo <= hi",
                ));
            }
        }
        if self.noise_std < 0.0 || self.rotation_range < 0.0 || self.shear_range < 0.0 {
            return Err(DataError::invalid(
                "augmentation",
                "ranges must be non-negative",
            ));
        }
        Ok(())
    }
}

/// The drawn parameters of one transform (Keras's `get_random_transform` dictionary).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    pub theta: f64,
    /// Row shift in pixels (Keras `tx`, from `height_shift_range`).
    pub tx: f64,
    /// Column shift in pixels (Keras `ty`, from `width_shift_range`).
    pub ty: f64,
    pub shear: f64,
    pub zx: f64,
    pub zy: f64,
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
    pub brightness: Option<f32>,
    pub rot90: u8,
    /// Seed of the noise stream, when noise is on.
    pub noise_seed: Option<u64>,
}

impl Transform {
    pub fn identity() -> Self {
        Transform {
            theta: 0.0,
            tx: 0.0,
            ty: 0.0,
            shear: 0.0,
            zx: 1.0,
            zy: 1.0,
            flip_horizontal: false,
            flip_vertical: false,
            brightness: None,
            rot90: 0,
            noise_seed: None,
        }
    }
}

/// The seed of one sample's augmentation in one epoch: a SplitMix64 mix of the three numbers,
/// so neighbouring samples and epochs get unrelated streams.
pub fn sample_seed(stage_seed: u64, epoch: u64, sample: u64) -> u64 {
    let mut z = stage_seed;
    for v in [epoch, sample] {
        z = splitmix(z ^ splitmix(v.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    }
    z
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Draws a transform like Keras's `get_random_transform` (its distributions, our RNG).
pub fn random_transform(spec: &AugmentSpec, h: usize, w: usize, seed: u64) -> Transform {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sym = |r: f32, rng: &mut ChaCha8Rng| {
        if r > 0.0 {
            rng.gen_range(-(r as f64)..=r as f64)
        } else {
            0.0
        }
    };
    let theta = sym(spec.rotation_range, &mut rng);
    let shift = |range: f32, size: usize, v: f64| if range < 1.0 { v * size as f64 } else { v };
    let tx = shift(
        spec.height_shift_range,
        h,
        sym(spec.height_shift_range, &mut rng),
    );
    let ty = shift(
        spec.width_shift_range,
        w,
        sym(spec.width_shift_range, &mut rng),
    );
    let shear = sym(spec.shear_range, &mut rng);
    let (zx, zy) = if spec.zoom_range == [1.0, 1.0] {
        (1.0, 1.0)
    } else {
        let [lo, hi] = spec.zoom_range.map(|z| z as f64);
        (rng.gen_range(lo..=hi), rng.gen_range(lo..=hi))
    };
    let flip_horizontal = spec.horizontal_flip && rng.gen_bool(0.5);
    let flip_vertical = spec.vertical_flip && rng.gen_bool(0.5);
    let brightness = spec.brightness_range.map(|[lo, hi]| rng.gen_range(lo..=hi));
    let rot90 = if spec.rot90 { rng.gen_range(0..4u8) } else { 0 };
    let noise_seed = (spec.noise_std > 0.0).then(|| rng.gen());
    Transform {
        theta,
        tx,
        ty,
        shear,
        zx,
        zy,
        flip_horizontal,
        flip_vertical,
        brightness,
        rot90,
        noise_seed,
    }
}

type Mat3 = [[f64; 3]; 3];

fn matmul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut out = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

/// The 2×3 matrix that maps an output (row, col) to its input sample position, exactly as
/// Keras hands it to `scipy.ndimage.affine_transform`; `None` when the transform is the
/// identity (Keras then skips the warp).
pub fn keras_affine_matrix(t: &Transform, h: usize, w: usize) -> Option<[[f64; 3]; 2]> {
    let mut m: Option<Mat3> = None;
    let mut compose = |next: Mat3| m = Some(m.map_or(next, |cur| matmul(&cur, &next)));
    if t.theta != 0.0 {
        let th = t.theta.to_radians();
        compose([
            [th.cos(), -th.sin(), 0.0],
            [th.sin(), th.cos(), 0.0],
            [0.0, 0.0, 1.0],
        ]);
    }
    if t.tx != 0.0 || t.ty != 0.0 {
        compose([[1.0, 0.0, t.tx], [0.0, 1.0, t.ty], [0.0, 0.0, 1.0]]);
    }
    if t.shear != 0.0 {
        let sh = t.shear.to_radians();
        compose([[1.0, -sh.sin(), 0.0], [0.0, sh.cos(), 0.0], [0.0, 0.0, 1.0]]);
    }
    if t.zx != 1.0 || t.zy != 1.0 {
        compose([[t.zx, 0.0, 0.0], [0.0, t.zy, 0.0], [0.0, 0.0, 1.0]]);
    }
    let m = m?;
    let (ox, oy) = (h as f64 / 2.0 - 0.5, w as f64 / 2.0 - 0.5);
    let offset = [[1.0, 0.0, ox], [0.0, 1.0, oy], [0.0, 0.0, 1.0]];
    let reset = [[1.0, 0.0, -ox], [0.0, 1.0, -oy], [0.0, 0.0, 1.0]];
    let c = matmul(&matmul(&offset, &m), &reset);
    // Keras swaps columns 0/1 and rows 0/1 when col_axis > row_axis (channels last).
    Some([[c[1][1], c[1][0], c[1][2]], [c[0][1], c[0][0], c[0][2]]])
}

/// A borrowed HWC uint8 image.
struct Source<'a> {
    pixels: &'a [u8],
    h: usize,
    w: usize,
    ch: usize,
}

/// Bilinear sampling of one channel-interleaved image at (r, c), scipy `order=1` semantics.
#[inline]
fn sample(img: &Source, r: f64, c: f64, mode: FillMode, cval: f32, out: &mut [f32]) {
    let Source {
        pixels: src,
        h,
        w,
        ch,
    } = *img;
    let (r, c) = match mode {
        FillMode::Constant => {
            if !(0.0..=(h - 1) as f64).contains(&r) || !(0.0..=(w - 1) as f64).contains(&c) {
                out.iter_mut().for_each(|o| *o = cval);
                return;
            }
            (r, c)
        }
        FillMode::Nearest => (r.clamp(0.0, (h - 1) as f64), c.clamp(0.0, (w - 1) as f64)),
        FillMode::Wrap => (wrap_coordinate(r, h), wrap_coordinate(c, w)),
        FillMode::Reflect => (r, c),
    };
    let (r0, c0) = (r.floor(), c.floor());
    let (fr, fc) = ((r - r0) as f32, (c - c0) as f32);
    let (r0, c0) = (r0 as i64, c0 as i64);
    let index = |i: i64, n: usize| -> usize {
        match mode {
            FillMode::Reflect => reflect_index(i, n),
            _ => i.clamp(0, n as i64 - 1) as usize,
        }
    };
    let (ra, rb) = (index(r0, h), index(r0 + 1, h));
    let (ca, cb) = (index(c0, w), index(c0 + 1, w));
    let (p00, p01, p10, p11) = (
        (ra * w + ca) * ch,
        (ra * w + cb) * ch,
        (rb * w + ca) * ch,
        (rb * w + cb) * ch,
    );
    for (k, o) in out.iter_mut().enumerate() {
        let top = src[p00 + k] as f32 * (1.0 - fc) + src[p01 + k] as f32 * fc;
        let bottom = src[p10 + k] as f32 * (1.0 - fc) + src[p11 + k] as f32 * fc;
        *o = top * (1.0 - fr) + bottom * fr;
    }
}

/// scipy's `wrap` for interpolation: coordinates fold into [0, n − 1] with period n − 1.
fn wrap_coordinate(x: f64, n: usize) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let period = (n - 1) as f64;
    let folded = x.rem_euclid(period);
    // rem_euclid(period) maps x = period to 0; both are the same sample under this wrap.
    folded
}

/// Half-sample symmetric index extension (scipy `reflect`).
fn reflect_index(i: i64, n: usize) -> usize {
    let n = n as i64;
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - 1 - m }) as usize
}

/// Augments one HWC uint8 image into `dst` (same size, f32, 0..255 times `rescale`).
pub fn augment_into(
    spec: &AugmentSpec,
    src: &[u8],
    h: usize,
    w: usize,
    c: usize,
    seed: u64,
    dst: &mut [f32],
) {
    let t = random_transform(spec, h, w, seed);
    apply_transform(spec, &t, src, h, w, c, dst);
}

/// Augments one image held as f32 in [0, 1] (the training loop's layout) through the uint8
/// path Keras takes, back into [0, 1]: `train::fit::Augment` for an `AugmentSpec`.
pub fn augment_unit_f32(
    spec: &AugmentSpec,
    image: &[f32],
    shape: [usize; 3],
    seed: u64,
    out: &mut [f32],
) {
    let bytes: Vec<u8> = image
        .iter()
        .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    augment_into(spec, &bytes, shape[0], shape[1], shape[2], seed, out);
    for v in out.iter_mut() {
        *v /= 255.0;
    }
}

/// Augments one image into uint8 (rounded and clipped), for previews and stored copies.
pub fn augment_into_u8(
    spec: &AugmentSpec,
    src: &[u8],
    h: usize,
    w: usize,
    c: usize,
    seed: u64,
    dst: &mut [u8],
) {
    let mut tmp = vec![0f32; h * w * c];
    let unscaled = AugmentSpec {
        rescale: 1.0,
        ..spec.clone()
    };
    augment_into(&unscaled, src, h, w, c, seed, &mut tmp);
    for (d, v) in dst.iter_mut().zip(tmp) {
        *d = v.round().clamp(0.0, 255.0) as u8;
    }
}

/// Applies drawn parameters: affine warp, flips, brightness, rot90, noise, rescale.
pub fn apply_transform(
    spec: &AugmentSpec,
    t: &Transform,
    src: &[u8],
    h: usize,
    w: usize,
    c: usize,
    dst: &mut [f32],
) {
    assert_eq!(src.len(), h * w * c, "source is not h×w×c");
    assert_eq!(dst.len(), h * w * c, "destination is not h×w×c");
    match keras_affine_matrix(t, h, w) {
        Some(m) => {
            let img = Source {
                pixels: src,
                h,
                w,
                ch: c,
            };
            for r in 0..h {
                for col in 0..w {
                    let (rf, cf) = (r as f64, col as f64);
                    let ir = m[0][0] * rf + m[0][1] * cf + m[0][2];
                    let ic = m[1][0] * rf + m[1][1] * cf + m[1][2];
                    let o = (r * w + col) * c;
                    sample(&img, ir, ic, spec.fill_mode, spec.cval, &mut dst[o..o + c]);
                }
            }
        }
        None => dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s as f32),
    }
    if t.flip_horizontal {
        for r in 0..h {
            for col in 0..w / 2 {
                for k in 0..c {
                    dst.swap((r * w + col) * c + k, (r * w + w - 1 - col) * c + k);
                }
            }
        }
    }
    if t.flip_vertical {
        for r in 0..h / 2 {
            for col in 0..w {
                for k in 0..c {
                    dst.swap((r * w + col) * c + k, ((h - 1 - r) * w + col) * c + k);
                }
            }
        }
    }
    if let Some(b) = t.brightness {
        // Keras: array_to_img(scale=True) stretches min..max to 0..255 and truncates to uint8,
        // then PIL's Brightness multiplies and truncates again.
        let (lo, hi) = dst
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let span = if hi > lo { hi - lo } else { 1.0 };
        for v in dst.iter_mut() {
            let stretched = ((*v - lo) / span * 255.0).trunc();
            *v = (stretched * b).trunc().clamp(0.0, 255.0);
        }
    }
    if t.rot90 != 0 && h == w {
        let copy = dst.to_vec();
        for r in 0..h {
            for col in 0..w {
                // Rotate counter-clockwise k times: output (r, c) reads from the source pixel
                // that lands there.
                let (sr, sc) = match t.rot90 {
                    1 => (col, w - 1 - r),
                    2 => (h - 1 - r, w - 1 - col),
                    _ => (h - 1 - col, r),
                };
                let (o, s) = ((r * w + col) * c, (sr * w + sc) * c);
                dst[o..o + c].copy_from_slice(&copy[s..s + c]);
            }
        }
    }
    if let Some(seed) = t.noise_seed {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for v in dst.iter_mut() {
            *v += spec.noise_std * rng.sample::<f32, _>(StandardNormal);
        }
    }
    if spec.rescale != 1.0 {
        dst.iter_mut().for_each(|v| *v *= spec.rescale);
    }
}

/// Augments the images at `indices` of `set` with one seed each into `dst` (len × h×w×c f32),
/// in parallel.
pub fn augment_batch(
    spec: &AugmentSpec,
    set: &ImageSet,
    indices: &[usize],
    seeds: &[u64],
    dst: &mut [f32],
) {
    assert_eq!(indices.len(), seeds.len(), "one seed per index");
    let n = set.image_len();
    assert_eq!(
        dst.len(),
        indices.len() * n,
        "destination holds len × image_len values"
    );
    dst.par_chunks_mut(n)
        .zip(indices.par_iter().zip(seeds.par_iter()))
        .with_min_len(16)
        .for_each(|(out, (&i, &seed))| {
            augment_into(
                spec,
                set.image(i),
                set.height,
                set.width,
                set.channels,
                seed,
                out,
            );
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize, c: usize) -> Vec<u8> {
        (0..h * w * c).map(|i| ((i * 7) % 251) as u8).collect()
    }

    #[test]
    fn identity_spec_copies_the_image() {
        let src = ramp(9, 9, 3);
        let mut dst = vec![0f32; src.len()];
        augment_into(&AugmentSpec::default(), &src, 9, 9, 3, 42, &mut dst);
        assert!(src.iter().zip(&dst).all(|(a, b)| *a as f32 == *b));
    }

    #[test]
    fn same_seed_same_result_and_different_seed_differs() {
        let spec = AugmentSpec {
            rotation_range: 30.0,
            zoom_range: AugmentSpec::zoom(0.2),
            horizontal_flip: true,
            ..Default::default()
        };
        let src = ramp(16, 16, 3);
        let (mut a, mut b, mut d) = (
            vec![0f32; src.len()],
            vec![0f32; src.len()],
            vec![0f32; src.len()],
        );
        augment_into(&spec, &src, 16, 16, 3, sample_seed(1, 2, 3), &mut a);
        augment_into(&spec, &src, 16, 16, 3, sample_seed(1, 2, 3), &mut b);
        augment_into(&spec, &src, 16, 16, 3, sample_seed(1, 2, 4), &mut d);
        assert_eq!(a, b);
        assert_ne!(a, d);
    }

    #[test]
    fn rot90_four_times_is_identity_and_once_moves_corners() {
        let src = ramp(5, 5, 1);
        let spec = AugmentSpec {
            rot90: true,
            ..Default::default()
        };
        let mut t = Transform::identity();
        t.rot90 = 1;
        let mut once = vec![0f32; 25];
        apply_transform(&spec, &t, &src, 5, 5, 1, &mut once);
        // Counter-clockwise: the top-right pixel goes to the top-left.
        assert_eq!(once[0], src[4] as f32);
        let mut img = src.clone();
        for _ in 0..4 {
            let mut out = vec![0f32; 25];
            apply_transform(&spec, &t, &img, 5, 5, 1, &mut out);
            img = out.iter().map(|v| *v as u8).collect();
        }
        assert_eq!(img, src);
    }

    #[test]
    fn flips_mirror_the_image() {
        let src = ramp(4, 6, 2);
        let spec = AugmentSpec::default();
        let mut t = Transform::identity();
        t.flip_horizontal = true;
        let mut out = vec![0f32; src.len()];
        apply_transform(&spec, &t, &src, 4, 6, 2, &mut out);
        assert_eq!(out[0], src[5 * 2] as f32);
        assert_eq!(out[1], src[5 * 2 + 1] as f32);
    }

    #[test]
    fn reflect_and_wrap_index_rules() {
        assert_eq!(
            (
                reflect_index(-1, 4),
                reflect_index(-2, 4),
                reflect_index(4, 4),
                reflect_index(5, 4)
            ),
            (0, 1, 3, 2)
        );
        assert_eq!(wrap_coordinate(-0.5, 5), 3.5);
        assert_eq!(wrap_coordinate(4.5, 5), 0.5);
    }

    #[test]
    fn parallel_batch_equals_one_by_one() {
        let set = ImageSet {
            height: 12,
            width: 12,
            channels: 3,
            images: (0..5 * 432).map(|i| (i % 253) as u8).collect(),
            labels: vec![0; 5],
            class_names: vec!["a".into()],
        };
        let spec = AugmentSpec {
            rotation_range: 90.0,
            shear_range: 10.0,
            vertical_flip: true,
            noise_std: 2.0,
            ..Default::default()
        };
        let indices = [4, 0, 2, 2];
        let seeds: Vec<u64> = (0..4).map(|i| sample_seed(5, 1, i)).collect();
        let mut batch = vec![0f32; 4 * 432];
        augment_batch(&spec, &set, &indices, &seeds, &mut batch);
        for (k, (&i, &seed)) in indices.iter().zip(&seeds).enumerate() {
            let mut one = vec![0f32; 432];
            augment_into(&spec, set.image(i), 12, 12, 3, seed, &mut one);
            assert_eq!(&batch[k * 432..(k + 1) * 432], one.as_slice());
        }
    }

    #[test]
    fn seeds_differ_across_epochs_and_samples() {
        let s = [
            sample_seed(7, 0, 0),
            sample_seed(7, 0, 1),
            sample_seed(7, 1, 0),
            sample_seed(8, 0, 0),
        ];
        for i in 0..4 {
            for j in i + 1..4 {
                assert_ne!(s[i], s[j]);
            }
        }
    }
}
