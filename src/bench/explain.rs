//! `gpl bench explain`: Grad-CAM of a batch of images and filter visualisation by gradient
//! ascent on the report's bigger CNN, gpl against PyTorch (pytorch-grad-cam for Grad-CAM) in
//! the same run. The two sides alternate round by round, PyTorch kept warm in one process,
//! and the ratio is taken pair by pair, so drift of the machine lands in the range, not in
//! the median.

use super::engine::bigger_cnn;
use super::{Pairs, Warm};
use crate::explain::filters::{visualise, Ascent, InputRange};
use crate::explain::{attribute, Method};
use crate::nn::network::Network;
use crate::nn::ops::activation::argmax;
use crate::nn::optim::OptimizerConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
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
fn start_torch(o: &ExplainBenchOptions) -> Result<Warm, String> {
    Warm::start(
        &o.python,
        "bench_explain_torch.py",
        &[o.threads, o.images, o.filters, o.steps].map(|v| v.to_string()),
        "is pytorch-grad-cam installed? pip install grad-cam",
    )
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
    let mut torch = match start_torch(o) {
        Ok(t) => Some(t),
        Err(e) => {
            println!("pytorch: not measured ({e})");
            None
        }
    };
    let (mut cam_ratio, mut filter_ratio, mut total_ratio) =
        (Pairs::new(), Pairs::new(), Pairs::new());
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
        let theirs_cam = t.seconds("gradcam").map_err(|e| miette::miette!("{e}"))?;
        let theirs_filters = t.seconds("filters").map_err(|e| miette::miette!("{e}"))?;
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
        println!("{}", cam_ratio.line("grad-cam", "pytorch"));
        println!("{}", filter_ratio.line("filters", "pytorch"));
        println!("{}", total_ratio.line("explain", "pytorch"));
    }
    Ok(())
}
