//! The classical detector over a field set: each image's luminance through the extractor,
//! each object scored and boxed as the COCO metrics and the chain want them.

use serde::{Deserialize, Serialize};

use super::catalog::{detect_image, CatalogError, LoadedImage};
use super::extract::{BackgroundParams, ExtractParams, Object};

/// One detection in a field, in pixels. The box is the object's pixel extent as edges
/// (pixel i spans [i, i + 1), so the box runs from the first pixel's `xmin` to the last's
/// `xmax + 1`), the convention of the truth boxes and of COCO; the centroid `x, y` is SEP's,
/// with pixel centres at whole numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldDetection {
    pub x: f64,
    pub y: f64,
    pub xmin: f64,
    pub ymin: f64,
    pub xmax: f64,
    pub ymax: f64,
    /// Isophotal flux above the background, in image units.
    pub flux: f64,
    pub a: f64,
    pub b: f64,
    pub theta: f64,
    pub npix: usize,
    pub flags: u16,
    /// Isophotal signal-to-noise ratio, and the score made from it (see [`extract_score`]).
    pub snr: f64,
    pub score: f64,
    /// The class a learned detector named, an index into its artifact's class names; the
    /// classical detector names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<usize>,
    /// Sky position, degrees, when the image has a celestial WCS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ra: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dec: Option<f64>,
}

/// Per image: its detections and the background the extractor measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageDetections {
    /// The image's index in its dataset and its name.
    pub index: usize,
    pub name: String,
    /// The global background and its RMS (`None` for a tiled image: one per tile).
    pub background: Option<f64>,
    pub background_rms: Option<f64>,
    pub objects: Vec<FieldDetection>,
}

/// The extractor has no probabilities; its score is the isophotal signal-to-noise ratio
/// `S = flux / (rms · √npix)` mapped monotonically into [0, 1) as `S / (S + 10)`, so
/// `min_score: 0.5` keeps detections at S ≥ 10 and ranking (all the COCO metrics see) is
/// by S.
pub fn extract_score(snr: f64) -> f64 {
    if snr <= 0.0 {
        0.0
    } else {
        snr / (snr + 10.0)
    }
}

/// Rec. 709 luminance of interleaved 8-bit pixels in 0–255 (what `image`'s `to_luma32f` gives
/// `gpl data extract` for a colour file), or the one channel itself.
pub fn luminance(pixels: &[u8], channels: usize) -> Vec<f32> {
    match channels {
        3 => pixels
            .chunks_exact(3)
            .map(|p| 0.2126 * p[0] as f32 + 0.7152 * p[1] as f32 + 0.0722 * p[2] as f32)
            .collect(),
        _ => pixels
            .iter()
            .step_by(channels.max(1))
            .map(|&v| v as f32)
            .collect(),
    }
}

/// Runs the extractor on one image (`height × width × channels` bytes).
pub fn detect_pixels(
    pixels: &[u8],
    height: usize,
    width: usize,
    channels: usize,
    back: &BackgroundParams,
    params: &ExtractParams,
) -> Result<(f64, f64, Vec<FieldDetection>), CatalogError> {
    let image = LoadedImage {
        width,
        height,
        data: luminance(pixels, channels),
        wcs: None,
    };
    let catalog = detect_image(&image, back, params)?;
    let rms = catalog.background.global_rms as f64;
    let objects = catalog
        .objects
        .iter()
        .map(|o| field_detection(o, rms))
        .collect();
    Ok((catalog.background.global as f64, rms, objects))
}

pub fn field_detection(o: &Object, rms: f64) -> FieldDetection {
    let snr = if rms > 0.0 && o.npix > 0 {
        o.flux as f64 / (rms * (o.npix as f64).sqrt())
    } else {
        0.0
    };
    FieldDetection {
        x: o.x,
        y: o.y,
        xmin: o.xmin as f64,
        ymin: o.ymin as f64,
        xmax: o.xmax as f64 + 1.0,
        ymax: o.ymax as f64 + 1.0,
        flux: o.flux as f64,
        a: o.a as f64,
        b: o.b as f64,
        theta: o.theta as f64,
        npix: o.npix,
        flags: o.flag,
        snr,
        score: extract_score(snr),
        class: None,
        ra: None,
        dec: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_is_monotonic_in_snr_and_half_at_ten() {
        assert_eq!(extract_score(10.0), 0.5);
        assert_eq!(extract_score(-1.0), 0.0);
        assert!(extract_score(3.0) < extract_score(30.0));
        assert!(extract_score(1e6) < 1.0);
    }

    #[test]
    fn a_bright_square_on_noise_is_found_with_its_box() {
        let (h, w) = (64, 64);
        let mut pixels = vec![0u8; h * w * 3];
        // Deterministic noise around 40 so the background has an RMS.
        let mut state = 12345u32;
        for p in pixels.iter_mut() {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            *p = 40 + (state >> 28) as u8;
        }
        for y in 20..30 {
            for x in 34..44 {
                for c in 0..3 {
                    pixels[(y * w + x) * 3 + c] = 200;
                }
            }
        }
        let back = BackgroundParams {
            bw: 32,
            bh: 32,
            ..BackgroundParams::default()
        };
        let params = ExtractParams {
            kernel: None,
            ..ExtractParams::default()
        };
        let (_, _, objects) = detect_pixels(&pixels, h, w, 3, &back, &params).unwrap();
        let square: Vec<_> = objects.iter().filter(|o| o.npix >= 50).collect();
        assert_eq!(square.len(), 1, "{objects:?}");
        let o = square[0];
        // Edges as pixel boundaries; a noise pixel above the threshold may join an edge.
        let found = [o.xmin, o.xmax, o.ymin, o.ymax];
        for (f, want) in found.iter().zip([34.0, 44.0, 20.0, 30.0]) {
            assert!((f - want).abs() <= 1.0, "{found:?}");
        }
        // Centroids as SEP gives them: pixel centres at whole numbers.
        assert!(
            (o.x - 38.5).abs() < 0.2 && (o.y - 24.5).abs() < 0.2,
            "{o:?}"
        );
        assert!(o.score > 0.9);
    }
}
