//! `gpl bench detect`: the classical detector (background, subtraction, extraction with SEP's
//! defaults) against SEP itself on the same images, alternating round by round with SEP kept
//! warm in one process (scripts/bench_extract_sep.py). The images: astropy's M13 (the parity
//! fixture) and synthetic star fields of 1024² and 2048² pixels. The ratio is pixels per
//! second, ours over SEP's, taken pair by pair. Then the learned detector against PyTorch
//! (`super::detector`); `only` picks one part.

use super::{Pairs, Warm};
use crate::data::fits::read_fits;
use crate::detect::extract::{extract, Background, BackgroundParams, ExtractParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::time::Instant;

/// The parts of `gpl bench detect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectPart {
    /// The classical extractor against SEP.
    Extractor,
    /// The SSD-lite against PyTorch.
    Detector,
}

pub struct DetectBenchOptions {
    pub rounds: usize,
    pub thresh: f32,
    pub minarea: usize,
    pub python: String,
    /// One part only; both when None.
    pub only: Option<DetectPart>,
    /// Threads for the detector, ours and PyTorch's.
    pub threads: usize,
    /// Minimum seconds per detector figure (per side and round).
    pub seconds: f64,
}

struct Image {
    name: String,
    width: usize,
    height: usize,
    data: Vec<f32>,
}

/// A star field: Gaussian PSFs of random flux on a sloped sky with Gaussian noise.
fn star_field(side: usize, stars: usize, seed: u64) -> Image {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0f32, 8.0).unwrap_or_else(|_| unreachable!("σ = 8 is valid"));
    let mut data: Vec<f32> = (0..side * side)
        .map(|i| 200.0 + 0.01 * (i % side) as f32 + noise.sample(&mut rng))
        .collect();
    for _ in 0..stars {
        let (x, y) = (
            rng.gen_range(0.0..side as f32),
            rng.gen_range(0.0..side as f32),
        );
        let sigma: f32 = rng.gen_range(1.0..2.5);
        let flux = 10f32.powf(rng.gen_range(2.5..5.0));
        let r = (5.0 * sigma).ceil() as isize;
        for dy in -r..=r {
            for dx in -r..=r {
                let (px, py) = (x as isize + dx, y as isize + dy);
                if px < 0 || py < 0 || px >= side as isize || py >= side as isize {
                    continue;
                }
                let (fx, fy) = (px as f32 - x, py as f32 - y);
                let v = flux / (2.0 * std::f32::consts::PI * sigma * sigma)
                    * (-(fx * fx + fy * fy) / (2.0 * sigma * sigma)).exp();
                data[py as usize * side + px as usize] += v;
            }
        }
    }
    Image {
        name: format!("stars {side}x{side}"),
        width: side,
        height: side,
        data,
    }
}

fn ours(images: &[Image], params: &ExtractParams) -> miette::Result<(f64, Vec<usize>)> {
    let start = Instant::now();
    let mut counts = Vec::new();
    for img in images {
        let bkg = Background::estimate(
            &img.data,
            img.width,
            img.height,
            &BackgroundParams::default(),
        );
        let mut data = img.data.clone();
        bkg.subtract(&mut data);
        counts.push(extract(&data, img.width, img.height, bkg.global_rms, params)?.len());
    }
    Ok((start.elapsed().as_secs_f64(), counts))
}

pub fn run(o: &DetectBenchOptions) -> miette::Result<()> {
    // A part whose reference cannot run does not stop the other; its error ends the run.
    let mut first = Ok(());
    if o.only != Some(DetectPart::Detector) {
        first = extractor(o);
        if let (Err(e), None) = (&first, o.only) {
            println!("extractor: failed ({e}); the detector part follows");
        }
    }
    if o.only != Some(DetectPart::Extractor) {
        let dir = tempfile_dir("detector")?;
        let result = super::detector::run(
            &super::detector::DetectorBenchOptions {
                threads: o.threads,
                seconds: o.seconds,
                rounds: o.rounds,
                python: o.python.clone(),
            },
            &dir,
        );
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    first
}

/// The classical extractor against SEP.
fn extractor(o: &DetectBenchOptions) -> miette::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let m13 = read_fits(&root.join("tests/fixtures/extract/m13.fits"), None)?;
    let images = vec![
        Image {
            name: "M13 (astropy, DSS)".into(),
            width: m13.width,
            height: m13.height,
            data: m13.data,
        },
        star_field(1024, 1500, 1),
        star_field(2048, 6000, 2),
    ];
    let dir = tempfile_dir("extractor")?;
    let mut paths = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let p = dir.join(format!("image{i}.npy"));
        std::fs::write(
            &p,
            crate::data::npy::npy_f32(&[img.height, img.width], &img.data),
        )
        .map_err(|e| miette::miette!("{}: {e}", p.display()))?;
        paths.push(p);
    }
    let params = ExtractParams {
        thresh: o.thresh,
        minarea: o.minarea,
        ..ExtractParams::default()
    };
    let pixels: usize = images.iter().map(|i| i.width * i.height).sum();
    println!(
        "images: {} ({pixels} pixels); thresh {} x global RMS, minarea {}, SEP's other defaults",
        images
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        o.thresh,
        o.minarea
    );
    let mut sep = Warm::start(
        &o.python,
        "bench_extract_sep.py",
        &[o.thresh.to_string(), o.minarea.to_string()]
            .into_iter()
            .chain(paths.iter().map(|p| p.display().to_string()))
            .collect::<Vec<_>>(),
        "is sep installed? pip install sep",
    )
    .map_err(|e| miette::miette!("{e}"))?;
    ours(&images, &params)?; // warm-up, as SEP's side does
    let mut ratios = Pairs::new();
    let mut result = Ok(());
    for round in 0..o.rounds {
        let (t_ours, n_ours) = ours(&images, &params)?;
        let v = match sep.ask("run") {
            Ok(v) => v,
            Err(e) => {
                result = Err(miette::miette!("{e}"));
                break;
            }
        };
        let t_sep = v["seconds"]
            .as_f64()
            .ok_or_else(|| miette::miette!("no seconds in `{v}`"))?;
        let ratio = t_sep / t_ours;
        println!(
            "round {}: ours {:.3} s ({:.2} Mpx/s, objects {n_ours:?}), sep {:.3} s ({:.2} Mpx/s, objects {}), ratio {ratio:.2}",
            round + 1,
            t_ours,
            pixels as f64 / t_ours / 1e6,
            t_sep,
            pixels as f64 / t_sep / 1e6,
            v["objects"]
        );
        ratios.push(ratio);
    }
    drop(sep);
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    println!("{}", ratios.line("extract", "sep"));
    Ok(())
}

/// A private folder under the system's temp directory for what the reference side reads
/// (the images SEP reads; the detector's two-line pipeline).
fn tempfile_dir(part: &str) -> miette::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("gpl-bench-detect-{part}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| miette::miette!("{}: {e}", dir.display()))?;
    Ok(dir)
}
