//! `gpl bench explain`: Grad-CAM of a batch of images and filter visualisation by gradient
//! ascent on the report's bigger CNN, gpl against PyTorch (pytorch-grad-cam for Grad-CAM) in
//! the same run. The two sides alternate round by round, PyTorch kept warm in one process,
//! and the ratio is taken pair by pair, so drift of the machine lands in the range, not in
//! the median.

use super::engine::bigger_cnn;
use crate::explain::filters::{visualise, Ascent, InputRange};
use crate::explain::{attribute, Method};
use crate::nn::network::Network;
use crate::nn::ops::activation::argmax;
use crate::nn::optim::OptimizerConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

pub struct ExplainBenchOptions {
    pub threads: usize,
    pub images: usize,
    pub filters: usize,
    pub steps: usize,
    pub rounds: usize,
    pub python: String,
}

/// The warm PyTorch process of scripts/bench_explain_torch.py.
struct Torch {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Torch {
    fn start(o: &ExplainBenchOptions) -> Result<Torch, String> {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_explain_torch.py");
        let mut child = Command::new(&o.python)
            .arg(&script)
            .args([o.threads, o.images, o.filters, o.steps].map(|v| v.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run `{}`: {e}", o.python))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        Ok(Torch {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    fn time(&mut self, command: &str) -> Result<f64, String> {
        let stdin = self.child.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "{command}").map_err(|e| e.to_string())?;
        let line = self
            .lines
            .next()
            .ok_or(
                "the PyTorch process ended (is pytorch-grad-cam installed? pip install grad-cam)",
            )?
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("bad line `{line}`: {e}"))?;
        v["seconds"]
            .as_f64()
            .ok_or_else(|| format!("no seconds in `{line}`"))
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = writeln!(stdin, "quit");
        }
        let _ = self.child.wait();
    }
}

fn median_and_range(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

pub fn run(o: &ExplainBenchOptions) -> miette::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()
        .map_err(|e| miette::miette!("thread pool: {e}"))?;
    pool.install(|| run_in_pool(o))
}

fn run_in_pool(o: &ExplainBenchOptions) -> miette::Result<()> {
    let ir = bigger_cnn();
    let mut net = Network::new(&ir, 0, OptimizerConfig::adam())?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let images: Vec<f32> = (0..o.images * 69 * 69 * 3).map(|_| rng.gen()).collect();
    let conv = |name: &str| {
        ir.layer_index(name)
            .ok_or_else(|| miette::miette!("the bigger CNN has no layer `{name}`"))
    };
    let (last_conv, conv3) = (conv("conv2d_4")?, conv("conv2d_3")?);
    let ascent = Ascent {
        steps: o.steps,
        lr: 0.02,
        l2: 0.0,
        tv: 0.0,
        jitter: 0,
        seed: 1,
    };
    let channels: Vec<usize> = (0..o.filters).collect();
    let range = InputRange { lo: 0.0, hi: 1.0 };
    let mut gradcam = || -> miette::Result<f64> {
        let start = Instant::now();
        let probs = net.probabilities(&images, o.images)?;
        let predicted: Vec<u32> = probs.chunks(10).map(|r| argmax(r) as u32).collect();
        attribute(
            &mut net,
            &images,
            &predicted,
            &Method::GradCam { layer: last_conv },
            0,
        )?;
        Ok(start.elapsed().as_secs_f64())
    };
    gradcam()?; // warm-up: compiles the graphs
    let mut net_f = Network::new(&ir, 0, OptimizerConfig::adam())?;
    let mut filters = || -> miette::Result<f64> {
        let start = Instant::now();
        visualise(&mut net_f, conv3, &channels, &ascent, range)?;
        Ok(start.elapsed().as_secs_f64())
    };
    filters()?;
    println!(
        "explain bench: bigger CNN, Grad-CAM of {} images at conv2d_4, {} filters of conv2d_3 × {} ascent steps, {} threads, {} rounds",
        o.images, o.filters, o.steps, o.threads, o.rounds
    );
    let mut torch = match Torch::start(o) {
        Ok(t) => Some(t),
        Err(e) => {
            println!("pytorch: not measured ({e})");
            None
        }
    };
    let (mut cam_ratio, mut filter_ratio, mut total_ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=o.rounds {
        let (ours_cam, ours_filters) = (gradcam()?, filters()?);
        let line = format!(
            "round {round}: gpl grad-cam {:.1} img/s, filters {:.2} s",
            o.images as f64 / ours_cam,
            ours_filters
        );
        let Some(t) = torch.as_mut() else {
            println!("{line}");
            continue;
        };
        let theirs_cam = t.time("gradcam").map_err(|e| miette::miette!("{e}"))?;
        let theirs_filters = t.time("filters").map_err(|e| miette::miette!("{e}"))?;
        println!(
            "{line} | pytorch grad-cam {:.1} img/s, filters {:.2} s",
            o.images as f64 / theirs_cam,
            theirs_filters
        );
        cam_ratio.push(theirs_cam / ours_cam);
        filter_ratio.push(theirs_filters / ours_filters);
        total_ratio.push((theirs_cam + theirs_filters) / (ours_cam + ours_filters));
    }
    if torch.is_some() {
        for (what, values) in [("grad-cam", &mut cam_ratio), ("filters", &mut filter_ratio)] {
            let (m, lo, hi) = median_and_range(values);
            println!("{what} ratio vs pytorch: {m:.2} (pairs: {lo:.2}–{hi:.2})");
        }
        let (m, lo, hi) = median_and_range(&mut total_ratio);
        println!("explain ratio vs pytorch: {m:.2} (pairs: {lo:.2}–{hi:.2})");
    }
    Ok(())
}
