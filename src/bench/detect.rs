//! `gpl bench detect`: the classical detector (background, subtraction, extraction with SEP's
//! defaults) against SEP itself on the same images, alternating round by round with SEP kept
//! warm in one process (scripts/bench_extract_sep.py). The images: astropy's M13 (the parity
//! fixture) and synthetic star fields of 1024² and 2048² pixels. The ratio is pixels per
//! second, ours over SEP's, taken pair by pair.

use crate::data::fits::read_fits;
use crate::detect::extract::{extract, Background, BackgroundParams, ExtractParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

pub struct DetectBenchOptions {
    pub rounds: usize,
    pub thresh: f32,
    pub minarea: usize,
    pub python: String,
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
    let dir = tempfile_dir()?;
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
    let script = root.join("scripts/bench_extract_sep.py");
    let mut child = Command::new(&o.python)
        .arg(&script)
        .arg(o.thresh.to_string())
        .arg(o.minarea.to_string())
        .args(&paths)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| miette::miette!("cannot run `{}`: {e}", o.python))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| miette::miette!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    ours(&images, &params)?; // warm-up, as SEP's side does
    let mut ratios = Vec::new();
    let mut result = Ok(());
    for round in 0..o.rounds {
        let (t_ours, n_ours) = ours(&images, &params)?;
        let answer = child
            .stdin
            .as_mut()
            .ok_or_else(|| miette::miette!("no stdin"))
            .and_then(|s| writeln!(s, "run").map_err(|e| miette::miette!("{e}")))
            .and_then(|_| {
                lines
                    .next()
                    .ok_or_else(|| {
                        miette::miette!("the SEP process ended (is sep installed? pip install sep)")
                    })?
                    .map_err(|e| miette::miette!("{e}"))
            });
        let line = match answer {
            Ok(l) => l,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| miette::miette!("bad line `{line}`: {e}"))?;
        let t_sep = v["seconds"]
            .as_f64()
            .ok_or_else(|| miette::miette!("no seconds in `{line}`"))?;
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
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = writeln!(stdin, "quit");
    }
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    ratios.sort_by(f64::total_cmp);
    let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
    let m = if ratios.len() % 2 == 1 {
        ratios[ratios.len() / 2]
    } else {
        (ratios[ratios.len() / 2 - 1] + ratios[ratios.len() / 2]) / 2.0
    };
    println!("extract ratio vs sep: {m:.2} (pairs: {lo:.2}–{hi:.2})");
    Ok(())
}

/// A private folder under the system's temp directory for the images SEP reads.
fn tempfile_dir() -> miette::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("gpl-bench-detect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| miette::miette!("{}: {e}", dir.display()))?;
    Ok(dir)
}
