//! Box-aware augmentation for detection fields: scale (zoom in or out, the same factor on both
//! axes), shift (with a zoom-in, which crop is kept), horizontal and vertical flips and a
//! random multiple of 90°, with every box moved with its pixels, clipped to the image, marked
//! `truncated` when cut, and dropped when less than `min_visible` of its area stays inside.
//!
//! The pixels go through `data::augment::apply_transform` (the Keras affine warp, then flips,
//! then rot90), so the conventions are the classification augmentation's; the boxes go
//! through the same matrix (`augment::keras_affine_matrix`) and the same flips and turns.
//! No free rotation or shear: an axis-aligned box would no longer bound its object tightly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::augment::{apply_transform, keras_affine_matrix, AugmentSpec, FillMode, Transform};
use super::fields::FieldObject;
use super::DataError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoxAugmentSpec {
    pub horizontal_flip: bool,
    pub vertical_flip: bool,
    /// A random multiple of 90° (square images only, as in `AugmentSpec`).
    pub rot90: bool,
    /// `[lo, hi]`: the picture is magnified by a factor drawn from this range (above 1 keeps
    /// a crop of the field, below 1 shrinks it onto a black border).
    pub scale: [f64; 2],
    /// The largest shift, as a fraction of the side, along each axis.
    pub shift: f64,
    /// Boxes keeping less than this fraction of their area inside the image are dropped.
    pub min_visible: f64,
}

impl Default for BoxAugmentSpec {
    fn default() -> Self {
        BoxAugmentSpec {
            horizontal_flip: false,
            vertical_flip: false,
            rot90: false,
            scale: [1.0, 1.0],
            shift: 0.0,
            min_visible: 0.5,
        }
    }
}

impl BoxAugmentSpec {
    pub fn validate(&self) -> Result<(), DataError> {
        let [lo, hi] = self.scale;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return Err(DataError::invalid(
                "box augmentation",
                format!("scale {:?} needs 0 < lo <= hi", self.scale),
            ));
        }
        if !(self.shift.is_finite() && (0.0..1.0).contains(&self.shift)) {
            return Err(DataError::invalid(
                "box augmentation",
                format!("shift {} must be in [0, 1)", self.shift),
            ));
        }
        if !(self.min_visible.is_finite() && (0.0..=1.0).contains(&self.min_visible)) {
            return Err(DataError::invalid(
                "box augmentation",
                format!("min_visible {} must be in [0, 1]", self.min_visible),
            ));
        }
        Ok(())
    }

    /// The pixel side of the transform: constant fill with black outside the image.
    fn pixel_spec() -> AugmentSpec {
        AugmentSpec {
            fill_mode: FillMode::Constant,
            cval: 0.0,
            ..AugmentSpec::default()
        }
    }
}

/// Draws one transform from `seed`: scale, shift, flips, turns (no rotation, shear or
/// brightness).
pub fn random_box_transform(spec: &BoxAugmentSpec, h: usize, w: usize, seed: u64) -> Transform {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let [lo, hi] = spec.scale;
    let scale = if lo < hi { rng.gen_range(lo..=hi) } else { lo };
    let mut shift = |size: usize| {
        if spec.shift > 0.0 {
            rng.gen_range(-spec.shift..=spec.shift) * size as f64
        } else {
            0.0
        }
    };
    let (tx, ty) = (shift(h), shift(w));
    let mut t = Transform::identity();
    t.tx = tx;
    t.ty = ty;
    // Keras's zoom samples the input `z` pixels apart: magnifying by `scale` is z = 1 / scale.
    t.zx = 1.0 / scale;
    t.zy = 1.0 / scale;
    t.flip_horizontal = spec.horizontal_flip && rng.gen_bool(0.5);
    t.flip_vertical = spec.vertical_flip && rng.gen_bool(0.5);
    t.rot90 = if spec.rot90 && h == w {
        rng.gen_range(0..4u8)
    } else {
        0
    };
    t
}

/// Applies `t` to one HWC uint8 image (rounded back to uint8) and to its objects.
pub fn apply_box_transform(
    t: &Transform,
    image: &[u8],
    (h, w, c): (usize, usize, usize),
    objects: &[FieldObject],
    min_visible: f64,
) -> (Vec<u8>, Vec<FieldObject>) {
    let mut out = vec![0f32; image.len()];
    apply_transform(&BoxAugmentSpec::pixel_spec(), t, image, h, w, c, &mut out);
    let pixels = out
        .into_iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    let boxes = objects
        .iter()
        .filter_map(|o| move_object(t, h, w, o, min_visible))
        .collect();
    (pixels, boxes)
}

/// Draws a transform from `seed` and applies it to one image and its objects.
pub fn augment_field(
    spec: &BoxAugmentSpec,
    image: &[u8],
    shape: (usize, usize, usize),
    objects: &[FieldObject],
    seed: u64,
) -> (Vec<u8>, Vec<FieldObject>) {
    let t = random_box_transform(spec, shape.0, shape.1, seed);
    apply_box_transform(&t, image, shape, objects, spec.min_visible)
}

/// Where a point given in pixel edges (x right, y down) goes under `t`, in the same frame.
fn move_point(t: &Transform, h: usize, w: usize, (x, y): (f64, f64)) -> (f64, f64) {
    // The warp maps an output pixel centre (row, col) to its input sample; invert it, with
    // pixel centres at edge + 0.5. Without rotation or shear the matrix is diagonal.
    let (mut x, mut y) = match keras_affine_matrix(t, h, w) {
        Some(m) => (
            (x - 0.5 - m[1][2]) / m[1][1] + 0.5,
            (y - 0.5 - m[0][2]) / m[0][0] + 0.5,
        ),
        None => (x, y),
    };
    let (hf, wf) = (h as f64, w as f64);
    if t.flip_horizontal {
        x = wf - x;
    }
    if t.flip_vertical {
        y = hf - y;
    }
    if h == w {
        // Counter-clockwise quarter turns, as `apply_transform` turns the pixels.
        for _ in 0..t.rot90 % 4 {
            (x, y) = (y, wf - x);
        }
    }
    (x, y)
}

/// One object under `t`: its box through the corners, clipped, or `None` when less than
/// `min_visible` of it remains. A synthetic truth moves with it (centre, radius and flux
/// scaled; surface brightness and class kept).
fn move_object(
    t: &Transform,
    h: usize,
    w: usize,
    o: &FieldObject,
    min_visible: f64,
) -> Option<FieldObject> {
    let (ax, ay) = move_point(t, h, w, (o.xmin, o.ymin));
    let (bx, by) = move_point(t, h, w, (o.xmax, o.ymax));
    let (xmin, xmax, ymin, ymax) = (ax.min(bx), ax.max(bx), ay.min(by), ay.max(by));
    let area = (xmax - xmin) * (ymax - ymin);
    let (cx0, cx1) = (xmin.max(0.0), xmax.min(w as f64));
    let (cy0, cy1) = (ymin.max(0.0), ymax.min(h as f64));
    if cx1 <= cx0 || cy1 <= cy0 || area <= 0.0 {
        return None;
    }
    if (cx1 - cx0) * (cy1 - cy0) < min_visible * area {
        return None;
    }
    let magnification = 1.0 / t.zx;
    let truth = o.truth.clone().map(|mut truth| {
        (truth.x, truth.y) = move_point(t, h, w, (truth.x, truth.y));
        truth.radius *= magnification;
        truth.flux *= magnification * magnification;
        truth
    });
    Some(FieldObject {
        class: o.class,
        xmin: cx0,
        ymin: cy0,
        xmax: cx1,
        ymax: cy1,
        truncated: o.truncated || cx0 > xmin || cy0 > ymin || cx1 < xmax || cy1 < ymax,
        difficult: o.difficult,
        truth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dark `h × w` RGB image with one bright rectangle [x0, x1) × [y0, y1).
    fn square(h: usize, w: usize, (x0, y0, x1, y1): (usize, usize, usize, usize)) -> Vec<u8> {
        let mut img = vec![0u8; h * w * 3];
        for y in y0..y1 {
            for x in x0..x1 {
                img[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[250, 200, 150]);
            }
        }
        img
    }

    fn object(xmin: f64, ymin: f64, xmax: f64, ymax: f64) -> FieldObject {
        FieldObject {
            class: 0,
            xmin,
            ymin,
            xmax,
            ymax,
            truncated: false,
            difficult: false,
            truth: None,
        }
    }

    /// The bounding box (pixel edges) of the pixels brighter than half the square's.
    fn bright_box(img: &[u8], h: usize, w: usize) -> Option<(f64, f64, f64, f64)> {
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        for y in 0..h {
            for x in 0..w {
                if img[(y * w + x) * 3] > 125 {
                    (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
                }
            }
        }
        (x0 != usize::MAX).then_some((x0 as f64, y0 as f64, x1 as f64, y1 as f64))
    }

    #[test]
    fn a_box_follows_its_object_through_every_transform() {
        let (h, w) = (40, 40);
        let img = square(h, w, (12, 15, 23, 20));
        let boxes = [object(12.0, 15.0, 23.0, 20.0)];
        let spec = BoxAugmentSpec {
            horizontal_flip: true,
            vertical_flip: true,
            rot90: true,
            scale: [0.7, 1.6],
            shift: 0.2,
            min_visible: 0.0,
        };
        let mut seen_turns = [false; 4];
        let mut checked = 0;
        for seed in 0..60 {
            let t = random_box_transform(&spec, h, w, seed);
            seen_turns[t.rot90 as usize] = true;
            let (out, moved) = apply_box_transform(&t, &img, (h, w, 3), &boxes, 0.0);
            let bright = bright_box(&out, h, w);
            match (bright, moved.first()) {
                (Some((x0, y0, x1, y1)), Some(b)) => {
                    // Bilinear edges: the half-level contour lies within a pixel of the box.
                    for (got, want) in [(x0, b.xmin), (y0, b.ymin), (x1, b.xmax), (y1, b.ymax)] {
                        assert!(
                            (got - want).abs() <= 1.0,
                            "seed {seed}: bright {bright:?}, box {b:?}, transform {t:?}"
                        );
                    }
                    checked += 1;
                }
                (None, None) => {}
                (bright, b) => panic!("seed {seed}: bright {bright:?} but box {b:?}"),
            }
        }
        assert!(seen_turns.iter().all(|&s| s), "every turn drawn");
        assert!(checked > 40, "{checked} of 60 transforms kept the square");
    }

    #[test]
    fn flips_and_turns_move_boxes_as_they_move_pixels() {
        // One bright pixel and its one-pixel box, through every flip and turn: the box lands
        // exactly on the pixel, so boxes and pixels share `data::augment`'s conventions.
        let (h, w) = (7, 7);
        let (px, py) = (5usize, 1usize);
        let img = square(h, w, (px, py, px + 1, py + 1));
        let one = [object(
            px as f64,
            py as f64,
            px as f64 + 1.0,
            py as f64 + 1.0,
        )];
        for fh in [false, true] {
            for fv in [false, true] {
                for turns in 0..4u8 {
                    let mut t = Transform::identity();
                    (t.flip_horizontal, t.flip_vertical, t.rot90) = (fh, fv, turns);
                    let (out, moved) = apply_box_transform(&t, &img, (h, w, 3), &one, 0.5);
                    let b = &moved[0];
                    assert_eq!(
                        bright_box(&out, h, w),
                        Some((b.xmin, b.ymin, b.xmax, b.ymax)),
                        "flips {fh} {fv}, turns {turns}"
                    );
                }
            }
        }
        // One quarter turn is counter-clockwise, as in the classification augmentation: the
        // top-right corner goes to the top-left.
        let mut t = Transform::identity();
        t.rot90 = 1;
        let moved = move_object(&t, 8, 8, &object(6.0, 0.0, 8.0, 2.0), 0.5).unwrap();
        assert_eq!(
            (moved.xmin, moved.ymin, moved.xmax, moved.ymax),
            (0.0, 0.0, 2.0, 2.0)
        );
    }

    #[test]
    fn cropped_boxes_are_clipped_marked_and_dropped_below_the_visible_fraction() {
        // Magnify 2× about the centre of a 20 × 20 image: [5, 15) fills the output.
        let mut t = Transform::identity();
        (t.zx, t.zy) = (0.5, 0.5);
        // Half inside the kept window ([2, 8) → [-6, 6)): half visible.
        let half = object(2.0, 8.0, 8.0, 12.0);
        let kept = move_object(&t, 20, 20, &half, 0.5).unwrap();
        assert_eq!(
            (kept.xmin, kept.xmax, kept.ymin, kept.ymax),
            (0.0, 6.0, 6.0, 14.0)
        );
        assert!(kept.truncated);
        assert!(move_object(&t, 20, 20, &half, 0.51).is_none());
        // Entirely outside the window: always dropped.
        assert!(move_object(&t, 20, 20, &object(0.0, 0.0, 4.0, 4.0), 0.0).is_none());
        // Inside: scaled about the centre, not truncated.
        let inner = move_object(&t, 20, 20, &object(8.0, 8.0, 12.0, 12.0), 0.5).unwrap();
        assert_eq!((inner.xmin, inner.xmax), (6.0, 14.0));
        assert!(!inner.truncated);
    }

    #[test]
    fn same_seed_same_augmentation_and_bad_specs_refused() {
        let spec = BoxAugmentSpec {
            horizontal_flip: true,
            rot90: true,
            scale: [0.8, 1.25],
            shift: 0.1,
            ..BoxAugmentSpec::default()
        };
        assert_eq!(
            random_box_transform(&spec, 16, 16, 5),
            random_box_transform(&spec, 16, 16, 5)
        );
        assert!((0..20)
            .any(|s| random_box_transform(&spec, 16, 16, s)
                != random_box_transform(&spec, 16, 16, 5)));
        for bad in [
            BoxAugmentSpec {
                scale: [1.2, 1.0],
                ..BoxAugmentSpec::default()
            },
            BoxAugmentSpec {
                shift: 1.0,
                ..BoxAugmentSpec::default()
            },
            BoxAugmentSpec {
                min_visible: 1.5,
                ..BoxAugmentSpec::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(spec.validate().is_ok());
    }
}
