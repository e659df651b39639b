//! Boxes as corners `[x0, y0, x1, y1]` in pixel edges (pixel i spans [i, i + 1)), the
//! convention of the truth boxes, the classical detector and COCO: their intersection over
//! union, written once for the f32 boxes of the learned detectors and the f64 boxes of the
//! chain. (The COCO metrics keep their own, which reproduces pycocotools' `[x, y, w, h]`
//! rounding and its crowd rule.)

use std::ops::{Add, Div, Mul, Sub};

/// The arithmetic [`iou`] needs: implemented for `f32` and `f64`.
pub trait Coord:
    Copy
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
{
    const ZERO: Self;
}

impl Coord for f32 {
    const ZERO: f32 = 0.0;
}

impl Coord for f64 {
    const ZERO: f64 = 0.0;
}

fn max<T: Coord>(a: T, b: T) -> T {
    if b > a {
        b
    } else {
        a
    }
}

fn min<T: Coord>(a: T, b: T) -> T {
    if b < a {
        b
    } else {
        a
    }
}

/// Width × height; negative for an inverted box.
pub fn area<T: Coord>(b: [T; 4]) -> T {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// Intersection over union, with the operations in torchvision's `box_iou` order (areas,
/// clamped overlap, `inter / (area_a + area_b - inter)`), so f32 results agree with it to
/// the last bit on ordinary boxes. Boxes without area (union 0) have IoU 0 with everything,
/// where torchvision gives NaN.
pub fn iou<T: Coord>(a: [T; 4], b: [T; 4]) -> T {
    let w = max(min(a[2], b[2]) - max(a[0], b[0]), T::ZERO);
    let h = max(min(a[3], b[3]) - max(a[1], b[1]), T::ZERO);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > T::ZERO {
        inter / union
    } else {
        T::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_nested_disjoint_and_empty_boxes() {
        assert!((iou([0.0f64, 0.0, 8.0, 10.0], [0.0, 0.0, 10.0, 10.0]) - 0.8).abs() < 1e-12);
        assert_eq!(
            iou([0.0f32, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]),
            1.0 / 7.0
        );
        assert_eq!(iou([0.0f32, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0]), 0.0);
        assert_eq!(iou([1.0f32, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]), 0.0);
    }
}
