//! `gpl bench detect`'s detector part (issue 17): stdlib's `ssd_lite`, compiled by the checker
//! from its source, against the same network written in PyTorch
//! (scripts/bench_detect_torch.py), random weights on both sides. Inference at batch 1 and 16
//! (every output, inference mode) and a training step at batch 16, gpl and a warm PyTorch
//! alternating round by round; the ratios are images/s, ours over PyTorch's, pair by pair.

use super::{rate, Pairs, Warm};
use crate::nn::ir::{LayerOp, ModelIr};
use crate::nn::learner::{Batch, Learner, Target};
use crate::nn::network::Network;
use crate::nn::optim::OptimizerConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// The benched model: `ssd_lite` with its defaults (256² input, alpha 0.5, 3 anchors per cell)
/// and one class, both outputs returned.
const SOURCE: &str = "import \"stdlib/detectors.gpl\"\n\
model bench_ssd_lite(classes: 1) {\n  use ssd_lite(classes)\n  output class_logits, box_offsets\n}\n";
const CLASSES: usize = 1;
/// `ssd_lite`'s defaults, which the PyTorch side is given.
const SIZE: usize = 256;
const ALPHA: f64 = 0.5;
const ANCHORS: usize = 3;
/// The batches timed: inference at both, training at the larger.
const BATCHES: [usize; 2] = [16, 1];
const TRAIN_BATCH: usize = 16;
/// Smooth-L1's beta for the box offsets (PyTorch's default).
const BETA: f32 = 1.0;

pub struct DetectorBenchOptions {
    pub threads: usize,
    pub seconds: f64,
    pub rounds: usize,
    pub python: String,
}

/// `ssd_lite(1)`'s IR, checked from the stdlib source like a pipeline's model (a two-line
/// pipeline written into `dir`).
pub fn ssd_lite_ir(dir: &Path) -> miette::Result<ModelIr> {
    let path = dir.join("bench_ssd_lite.gpl");
    std::fs::write(&path, SOURCE).map_err(|e| miette::miette!("{}: {e}", path.display()))?;
    let program = crate::check::load_program(&path, None)
        .map_err(|d| miette::miette!("ssd_lite does not check:\n{}", d.render_plain()))?;
    program
        .models
        .iter()
        .find(|m| m.name == "bench_ssd_lite")
        .and_then(|m| m.default_ir.clone())
        .ok_or_else(|| miette::miette!("bench_ssd_lite has no IR"))
}

/// Our side: the network, one batch of random images (the largest batch; smaller ones take
/// its first images) and the training batch's random targets.
struct Ours {
    net: Network,
    per: usize,
    images: Vec<f32>,
    /// Per anchor: −1 ignored, 0 background, c + 1 for class c.
    labels: Vec<i32>,
    /// Four encoded offsets per anchor.
    boxes: Vec<f32>,
    weights: Vec<f32>,
}

impl Ours {
    /// Inference images/s at batch `n` over at least `seconds` (every output).
    fn infer(&mut self, n: usize, seconds: f64, warm_up: bool) -> miette::Result<f64> {
        let (net, images) = (&mut self.net, &self.images[..n * self.per]);
        let mut failed = None;
        let (per_second, _) = rate(seconds, n, warm_up, || {
            if failed.is_none() {
                failed = net.all_logits(images, n).err();
            }
        });
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(per_second),
        }
    }

    /// Training images/s at `TRAIN_BATCH` over at least `seconds`: the focal loss on the class
    /// logits, smooth-L1 on the positive anchors' box offsets, Adam.
    fn train(&mut self, seconds: f64, warm_up: bool) -> miette::Result<f64> {
        let n = TRAIN_BATCH;
        let batch = Batch {
            images: &self.images[..n * self.per],
            targets: vec![
                Target::Anchors {
                    labels: &self.labels,
                    classes: CLASSES,
                    alpha: 0.25,
                    gamma: 2.0,
                },
                Target::Boxes {
                    values: &self.boxes,
                    labels: &self.labels,
                    beta: BETA,
                },
            ],
            weights: &self.weights,
        };
        let net = &mut self.net;
        let mut failed = None;
        let (per_second, _) = rate(seconds, n, warm_up, || {
            if failed.is_none() {
                failed = net.train_batch(&batch, 1e-3).err();
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(per_second),
        }
    }
}

/// Random training targets for `anchors` anchors per image, as the PyTorch side draws them:
/// per anchor 1% positive (a random class), 4% ignored, the rest background; box offsets
/// uniform in [−1, 1).
fn targets(rng: &mut ChaCha8Rng, n: usize, anchors: usize) -> (Vec<i32>, Vec<f32>) {
    let labels = (0..n * anchors)
        .map(|_| match rng.gen::<f64>() {
            u if u < 0.01 => rng.gen_range(1..=CLASSES as i32),
            u if u < 0.05 => -1,
            _ => 0,
        })
        .collect();
    let boxes = (0..n * anchors * 4)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    (labels, boxes)
}

/// What a layer is, for the profile's totals by kind.
fn kind(op: &LayerOp) -> &'static str {
    match op {
        LayerOp::Conv2d { groups, .. } if *groups > 1 => "depthwise conv",
        LayerOp::Conv2d { kernel: [1, 1], .. } => "pointwise conv",
        LayerOp::Conv2d { .. } => "full conv (stem)",
        LayerOp::BatchNorm { .. } => "batchnorm",
        LayerOp::Activation(_) => "activation",
        LayerOp::Flatten | LayerOp::Concat => "flatten + concat",
        _ => "other",
    }
}

/// Where one batch's time goes, from `Network::profile`: the totals by kind of layer, then
/// the `top` slowest layers, each with its share.
fn print_profile(net: &Network, ir: &ModelIr, train: bool, top: usize) {
    let profile = net.profile(train);
    let total: f64 = profile.iter().map(|(_, f, b)| f + b).sum();
    if total <= 0.0 {
        return;
    }
    let mut kinds: Vec<(&str, f64, usize)> = Vec::new();
    for (layer, (_, f, b)) in ir.layers.iter().zip(&profile) {
        let k = kind(&layer.op);
        match kinds.iter_mut().find(|(name, _, _)| *name == k) {
            Some(entry) => {
                entry.1 += f + b;
                entry.2 += 1;
            }
            None => kinds.push((k, f + b, 1)),
        }
    }
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("    by kind of layer:");
    for (k, t, count) in &kinds {
        println!(
            "      {k:<18} {count:3} layers {:7.1} ms  {:4.1}%",
            t * 1e3,
            100.0 * t / total
        );
    }
    let mut layers: Vec<_> = profile.iter().collect();
    layers.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
    println!("    slowest layers (forward / backward):");
    for (name, f, b) in layers.into_iter().take(top) {
        println!(
            "      {name:<18} {:7.1} / {:6.1} ms  {:4.1}%",
            f * 1e3,
            b * 1e3,
            100.0 * (f + b) / total
        );
    }
}

pub fn run(o: &DetectorBenchOptions, dir: &Path) -> miette::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()
        .map_err(|e| miette::miette!("thread pool: {e}"))?;
    // Networks are not Send: the whole part runs inside the pool.
    pool.install(|| run_in_pool(o, dir))
}

fn run_in_pool(o: &DetectorBenchOptions, dir: &Path) -> miette::Result<()> {
    let ir = ssd_lite_ir(dir)?;
    println!(
        "detector: ssd_lite(1) of stdlib/detectors.gpl ({SIZE}x{SIZE}x3, alpha {ALPHA}, {ANCHORS} anchors per cell): {} parameters, {:.1} MFLOP/image forward, {} layers; {} threads, ≥{} s per figure, {} paired rounds",
        ir.total_params(),
        ir.total_flops() as f64 / 1e6,
        ir.layers.len(),
        o.threads,
        o.seconds,
        o.rounds
    );
    let net = Network::new(&ir, 7, OptimizerConfig::adam())?;
    let per: usize = ir.input.iter().product();
    let most = BATCHES.into_iter().max().unwrap_or(1).max(TRAIN_BATCH);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let images = (0..most * per).map(|_| rng.gen()).collect();
    let mut ours = Ours {
        net,
        per,
        images,
        labels: Vec::new(),
        boxes: Vec::new(),
        weights: vec![1.0; TRAIN_BATCH],
    };
    let widths: Vec<usize> = ours
        .net
        .all_logits(&ours.images[..per], 1)?
        .iter()
        .map(Vec::len)
        .collect();
    let anchors = widths.first().copied().unwrap_or(0) / CLASSES;
    (ours.labels, ours.boxes) = targets(&mut rng, TRAIN_BATCH, anchors);
    let mut torch = Warm::start(
        &o.python,
        "bench_detect_torch.py",
        &[
            o.threads.to_string(),
            CLASSES.to_string(),
            SIZE.to_string(),
            ALPHA.to_string(),
            ANCHORS.to_string(),
            BETA.to_string(),
        ],
        "are torch and torchvision importable by GPL_BENCH_PYTHON?",
    )
    .map_err(|e| miette::miette!("{e}"))?;
    let theirs = torch.ask("describe").map_err(|e| miette::miette!("{e}"))?;
    let their_widths: Vec<usize> = theirs["outputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as usize)
                .collect()
        })
        .unwrap_or_default();
    if their_widths != widths {
        miette::bail!(
            "the PyTorch SSD-lite's outputs per image are {their_widths:?}, gpl's {widths:?} ({})",
            ours.net.output_names().join(", ")
        );
    }
    println!(
        "  outputs per image {} = {widths:?} on both sides; pytorch {}: {} parameters",
        ours.net.output_names().join(", "),
        theirs["torch"].as_str().unwrap_or("?"),
        theirs["params"]
    );
    // Warm-ups compile the graphs; then one profiled pass at batch 16.
    for n in BATCHES {
        ours.infer(n, 0.0, true)?;
    }
    ours.train(0.0, true)?;
    ours.net.set_profiling(true);
    let profiled = ours.infer(BATCHES[0], o.seconds, false)?;
    println!(
        "  where an inference batch of {}'s time goes ({profiled:.1} images/s while profiled):",
        BATCHES[0]
    );
    print_profile(&ours.net, &ir, false, 10);
    let profiled = ours.train(o.seconds, false)?;
    println!(
        "  where a training step of {TRAIN_BATCH}'s time goes ({profiled:.1} images/s while profiled):"
    );
    print_profile(&ours.net, &ir, true, 10);
    // Switching off also clears the timers: the rounds run unprofiled.
    ours.net.set_profiling(false);

    let mut infer: Vec<Pairs> = BATCHES.iter().map(|_| Pairs::new()).collect();
    // Images/s per batch, (gpl, pytorch), every round.
    let mut rates: Vec<Vec<(f64, f64)>> = BATCHES.iter().map(|_| Vec::new()).collect();
    let (mut train, mut train_rates) = (Pairs::new(), Vec::new());
    for round in 1..=o.rounds {
        let mut line = format!("  round {round}, images/s gpl | pytorch:");
        for ((&n, pairs), seen) in BATCHES.iter().zip(&mut infer).zip(&mut rates) {
            let mine = ours.infer(n, o.seconds, false)?;
            let other = their_rate(&mut torch, &format!("infer {n} {}", o.seconds))?;
            pairs.push(mine / other);
            seen.push((mine, other));
            line.push_str(&format!(" infer batch {n} {mine:.1} | {other:.1};"));
        }
        let mine = ours.train(o.seconds, false)?;
        let other = their_rate(&mut torch, &format!("train {TRAIN_BATCH} {}", o.seconds))?;
        train.push(mine / other);
        train_rates.push((mine, other));
        line.push_str(&format!(
            " train batch {TRAIN_BATCH} {mine:.1} | {other:.1}"
        ));
        println!("{}", line.trim_end_matches(';'));
    }
    for (&n, seen) in BATCHES.iter().zip(&rates) {
        println!(
            "detector inference at batch {n}, images/s (median of rounds): gpl {:.1} | pytorch {:.1}",
            median(seen.iter().map(|r| r.0)),
            median(seen.iter().map(|r| r.1))
        );
    }
    println!(
        "detector training at batch {TRAIN_BATCH}, images/s (median of rounds): gpl {:.1} | pytorch {:.1}",
        median(train_rates.iter().map(|r| r.0)),
        median(train_rates.iter().map(|r| r.1))
    );
    println!("{}", train.line("detector train", "pytorch"));
    for (&n, pairs) in BATCHES.iter().zip(&infer) {
        let theirs = if n == TRAIN_BATCH {
            "pytorch".to_string()
        } else {
            format!("pytorch (batch {n})")
        };
        println!("{}", pairs.line("detector infer", &theirs));
    }
    Ok(())
}

/// PyTorch's images/s for one command (`infer N SECONDS`, `train N SECONDS`).
fn their_rate(torch: &mut Warm, command: &str) -> miette::Result<f64> {
    let v = torch.ask(command).map_err(|e| miette::miette!("{e}"))?;
    v["rate"]
        .as_f64()
        .ok_or_else(|| miette::miette!("no rate in `{v}`"))
}

/// The median of some rates (NaN for none).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut p = Pairs::new();
    values.for_each(|v| p.push(v));
    p.summary().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benched_ssd_lite_has_the_pytorch_sides_parameters_and_outputs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ir = ssd_lite_ir(dir.path()).unwrap_or_else(|e| panic!("{e:?}"));
        // What scripts/bench_detect_torch.py's `describe` answers for its SsdLite (torch 2.15):
        // the same trainable parameters and per-image output widths.
        assert_eq!(ir.total_params(), 119_740);
        let widths: Vec<usize> = ir
            .outputs
            .iter()
            .map(|&o| ir.layers[o].output.iter().product())
            .collect();
        assert_eq!(widths, [3 * 1360, 3 * 1360 * 4]);
        let count = |k: &str| ir.layers.iter().filter(|l| kind(&l.op) == k).count();
        // Seven backbone blocks and eight heads; as many pointwise convolutions.
        assert_eq!((count("depthwise conv"), count("pointwise conv")), (15, 15));
    }

    #[test]
    fn random_targets_mark_about_one_anchor_in_a_hundred_positive() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (labels, boxes) = targets(&mut rng, 16, 4080);
        assert_eq!((labels.len(), boxes.len()), (16 * 4080, 16 * 4080 * 4));
        let share = |f: fn(i32) -> bool| {
            labels.iter().filter(|&&l| f(l)).count() as f64 / labels.len() as f64
        };
        assert!((share(|l| l >= 1) - 0.01).abs() < 0.003);
        assert!((share(|l| l == -1) - 0.04).abs() < 0.005);
        assert!(labels.iter().all(|&l| (-1..=CLASSES as i32).contains(&l)));
        assert!(boxes.iter().all(|b| (-1.0..1.0).contains(b)));
    }
}
