//! Tiled extraction: the FITS reader's row bands against a whole read, and tiles that find the
//! same objects as one pass over the whole image.

use gpl::data::fits::{open_fits, read_fits, write_fits_f32};
use gpl::detect::catalog::{detect_image, LoadedImage};
use gpl::detect::extract::{BackgroundParams, ExtractParams, Object};
use gpl::detect::tile::{detect_tiled, detect_tiled_fits, TileParams};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// Well-separated Gaussian sources (σ 1.2–2.5 px) on a 100-count sky with σ = 5 noise, on a
/// jittered 50-px grid, so many straddle the tile edges below.
fn sky(width: usize, height: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0f64, 5.0).unwrap();
    let mut data: Vec<f32> = (0..width * height)
        .map(|_| (100.0 + noise.sample(&mut rng)) as f32)
        .collect();
    for gy in 0..height / 50 {
        for gx in 0..width / 50 {
            let x = 25.0 + gx as f64 * 50.0 + rng.gen_range(-4.0..4.0);
            let y = 25.0 + gy as f64 * 50.0 + rng.gen_range(-4.0..4.0);
            let s = rng.gen_range(1.2..2.5);
            let flux = rng.gen_range(4000.0..20000.0);
            let (x0, x1) = (
                (x - 12.0).max(0.0) as usize,
                ((x + 13.0) as usize).min(width),
            );
            let (y0, y1) = (
                (y - 12.0).max(0.0) as usize,
                ((y + 13.0) as usize).min(height),
            );
            for py in y0..y1 {
                for px in x0..x1 {
                    let r2 = (px as f64 - x).powi(2) + (py as f64 - y).powi(2);
                    data[py * width + px] += (flux / (2.0 * std::f64::consts::PI * s * s)
                        * (-r2 / (2.0 * s * s)).exp())
                        as f32;
                }
            }
        }
    }
    data
}

fn params() -> ExtractParams {
    // Well above the noise: every detection is a source, none a noise peak that a tile's own
    // background RMS might keep or lose.
    ExtractParams {
        thresh: 5.0,
        ..ExtractParams::default()
    }
}

fn positions(objects: &[Object]) -> Vec<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = objects.iter().map(|o| (o.x, o.y)).collect();
    p.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)));
    p
}

#[test]
fn tiled_extraction_finds_the_untiled_objects_within_a_pixel() {
    let (w, h) = (600, 500);
    let data = sky(w, h, 11);
    let back = BackgroundParams::default();
    let whole = detect_image(
        &LoadedImage {
            width: w,
            height: h,
            data: data.clone(),
            wcs: None,
        },
        &back,
        &params(),
    )
    .unwrap();
    assert_eq!(whole.objects.len(), 120, "the sky has 12 × 10 sources");
    let tiling = TileParams {
        tile: 200,
        overlap: 48,
        min_ios: 0.5,
    };
    let mut image = LoadedImage {
        width: w,
        height: h,
        data: data.clone(),
        wcs: None,
    };
    let tiled = detect_tiled(&mut image, None, &back, &params(), &tiling).unwrap();
    assert_eq!(tiled.tiles, 4 * 3);
    let (a, b) = (positions(&whole.objects), positions(&tiled.objects));
    assert_eq!(a.len(), b.len(), "untiled {a:?}\ntiled {b:?}");
    for p in &a {
        let nearest = b
            .iter()
            .map(|q| ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt())
            .fold(f64::INFINITY, f64::min);
        assert!(
            nearest < 1.0,
            "{p:?}: nearest tiled object {nearest} px away"
        );
    }

    // The same image as a FITS file, read one band of tile rows at a time.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sky.fits");
    write_fits_f32(&path, w, h, |y| data[y * w..(y + 1) * w].to_vec()).unwrap();
    let from_fits = detect_tiled_fits(&path, None, &back, &params(), &tiling).unwrap();
    assert_eq!(positions(&from_fits.objects), b);
}

#[test]
fn fits_row_bands_equal_the_whole_image() {
    let (w, h) = (37, 23);
    let data: Vec<f32> = (0..w * h)
        .map(|i| {
            if i % 17 == 3 {
                f32::NAN
            } else {
                i as f32 * 0.5 - 40.0
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ramp.fits");
    write_fits_f32(&path, w, h, |y| data[y * w..(y + 1) * w].to_vec()).unwrap();
    let whole = read_fits(&path, None).unwrap();
    assert_eq!((whole.width, whole.height), (w, h));
    let same = |a: &[f32], b: &[f32]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
    };
    assert!(same(&whole.data, &data));
    let mut reader = open_fits(&path, Some(0)).unwrap();
    for (y0, y1) in [(0, 1), (5, 12), (22, 23), (0, 23), (7, 7)] {
        let band = reader.read_rows(y0, y1).unwrap();
        assert!(same(&band, &data[y0 * w..y1 * w]), "rows {y0}..{y1}");
    }
    let err = open_fits(&path, Some(1)).unwrap_err().to_string();
    assert!(
        err.contains("ramp.fits") && err.contains("no HDU 1"),
        "{err}"
    );
}
