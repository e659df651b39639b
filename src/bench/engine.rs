//! `gpl bench engine`: GEMM backends on the convolution shapes, the bigger CNN's first two
//! layers by im2col and by direct convolution, a depthwise layer by grouped im2col and by its
//! own kernel, then images/s of a forward pass and a training step for DESIGN.md's net and the
//! report's bigger CNN, with GFLOP/s against the machine's peak (`peak_gflops`), peak memory,
//! per-layer time and the share of a step outside the products; last, rounds alternating gpl
//! and a warm PyTorch, ratios pair by pair. Timing is wall-clock over at least `seconds` per
//! figure.

use super::{rate, Pairs, Warm};
use crate::nn::gemm::{self, gemm, Backend, MatRef};
use crate::nn::ir::{Activation, LayerOp, ModelIr, Padding, Regularizer};
use crate::nn::learner::{Batch, Learner};
use crate::nn::network::Network;
use crate::nn::ops::conv::{
    conv2d_backward_by, conv2d_forward_by, ConvGeom, ConvMethod, ConvScratch,
};
use crate::nn::optim::OptimizerConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The fp32 peak of `threads` cores of this CPU, GFLOP/s: 2 FMA units × lanes × 2 flops × the
/// clock /proc/cpuinfo gives (2.45 GHz where it gives none), with 16 lanes where the CPU has
/// AVX-512 and 8 otherwise. (It was a constant for 8 lanes, 156.8 at 2 cores, until a
/// single-threaded GEMM measured 147 GFLOP/s on an AVX-512 machine: a peak it cannot be.)
pub fn peak_gflops(threads: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    let wide = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let wide = false;
    let lanes = if wide { 16.0 } else { 8.0 };
    let ghz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("cpu MHz"))?;
            line.split(':').nth(1)?.trim().parse::<f64>().ok()
        })
        .map_or(2.45, |mhz| mhz / 1000.0);
    threads as f64 * 2.0 * lanes * 2.0 * ghz
}

pub struct BenchOptions {
    pub threads: usize,
    pub batch: usize,
    pub seconds: f64,
    pub rounds: usize,
    pub python: String,
    pub skip_torch: bool,
}

fn conv(filters: usize) -> LayerOp {
    LayerOp::Conv2d {
        filters,
        kernel: [3, 3],
        stride: [1, 1],
        padding: Padding::Valid,
        dilation: [1, 1],
        groups: 1,
        activation: Activation::Relu,
        regularizer: Regularizer::default(),
    }
}

fn pool() -> LayerOp {
    LayerOp::MaxPool {
        size: [2, 2],
        stride: [2, 2],
        padding: Padding::Valid,
    }
}

fn dense(units: usize, activation: Activation) -> LayerOp {
    LayerOp::Dense {
        units,
        activation,
        regularizer: Regularizer::default(),
    }
}

/// DESIGN.md's benchmark net (69.3 MFLOP per image).
pub fn design_net() -> ModelIr {
    let ops = vec![
        conv(32),
        pool(),
        conv(64),
        pool(),
        conv(128),
        pool(),
        LayerOp::Flatten,
        dense(128, Activation::Relu),
        dense(10, Activation::Softmax),
    ];
    ModelIr::build(
        "design_net",
        vec![69, 69, 3],
        ops.into_iter().map(|o| (None, o)).collect(),
    )
    .expect("fixed valid model")
}

/// The report's bigger CNN: conv 32-64-128-128 relu + batchnorm + maxpool, dropout, dense 512.
pub fn bigger_cnn() -> ModelIr {
    let mut ops = Vec::new();
    for f in [32, 64, 128, 128] {
        ops.extend([
            conv(f),
            LayerOp::BatchNorm {
                momentum: 0.99,
                epsilon: 1e-3,
            },
            pool(),
        ]);
    }
    ops.extend([
        LayerOp::Flatten,
        LayerOp::Dropout { rate: 0.5 },
        dense(512, Activation::Relu),
        dense(10, Activation::Softmax),
    ]);
    ModelIr::build(
        "bigger_cnn",
        vec![69, 69, 3],
        ops.into_iter().map(|o| (None, o)).collect(),
    )
    .expect("fixed valid model")
}

/// Peak resident memory of this process (VmHWM), in bytes, where /proc exposes it.
fn peak_rss() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<usize>()
        .ok()
        .map(|kb| kb * 1024)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// GFLOP/s of both GEMM backends, single-threaded, on the im2col shapes of the bigger CNN.
fn gemm_comparison(seconds: f64) -> Vec<(String, f64, f64)> {
    // (label, m, k, n, transposed lhs)
    let shapes = [
        ("conv1 fwd 4489x27x32", 4489, 27, 32, false),
        ("conv2 fwd 961x288x64", 961, 288, 64, false),
        ("conv3 fwd 2028x576x128", 2028, 576, 128, false),
        ("conv2 dK 288x961x64", 288, 961, 64, true),
        ("conv2 dX 961x64x288", 961, 64, 288, false),
        ("conv4 fwd 128x1152x128", 128, 1152, 128, false),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut out = Vec::new();
    for (label, m, k, n, trans) in shapes {
        let a: Vec<f32> = (0..m * k).map(|_| rng.gen()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.gen()).collect();
        let mut c = vec![0.0f32; m * n];
        let mut measured = [0.0; 2];
        for (slot, backend) in [Backend::Gemm, Backend::MatrixMultiply]
            .into_iter()
            .enumerate()
        {
            gemm::set_backend(backend);
            let a_ref = if trans {
                MatRef::rows(&a, m).t()
            } else {
                MatRef::rows(&a, k)
            };
            let (per_second, _) = rate(seconds / 6.0, 1, true, || {
                gemm(m, k, n, a_ref, MatRef::rows(&b, n), &mut c, n, false, 1)
            });
            measured[slot] = per_second * 2.0 * (m * k * n) as f64 / 1e9;
        }
        out.push((label.to_string(), measured[0], measured[1]));
    }
    out
}

/// The bigger CNN's first two layers: 3 channels (K = 27, no input gradient needed) and
/// 32 channels on a 31×31 map (K = 288).
fn compared_layers() -> [(&'static str, ConvGeom, bool); 2] {
    let g =
        |input, filters, padding| ConvGeom::new(input, filters, [3, 3], [1, 1], padding, [1, 1], 1);
    [
        (
            "first layer (69x69x3 -> 32 filters, K = 27",
            g([69, 69, 3], 32, Padding::Valid),
            false,
        ),
        (
            "second layer (31x31x32 -> 64 filters, K = 288",
            g([31, 31, 32], 64, Padding::Same),
            true,
        ),
    ]
}

/// One layer at the bench's batch and threads, by im2col + GEMM and by the direct kernels:
/// ms per forward, per parameter gradient and (with `input_gradient`) per input gradient.
fn layer_comparison(
    g: &ConvGeom,
    input_gradient: bool,
    options: &BenchOptions,
) -> [(f64, f64, Option<f64>); 2] {
    let n = options.batch;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x: Vec<f32> = (0..n * g.in_len()).map(|_| rng.gen()).collect();
    let mut dy: Vec<f32> = (0..n * g.out_len()).map(|_| rng.gen()).collect();
    let k: Vec<f32> = (0..g.kernel_len()).map(|_| rng.gen()).collect();
    let b = vec![0.1f32; g.filters];
    let (mut dk, mut db) = (vec![0.0f32; k.len()], vec![0.0f32; b.len()]);
    let mut dx = vec![0.0f32; x.len()];
    let mut y = vec![0.0f32; n * g.out_len()];
    let mut scratch = ConvScratch::new(g, n, true);
    let seconds = options.seconds / 4.0;
    [ConvMethod::Im2col, ConvMethod::Direct].map(|method| {
        let (forward, _) = rate(seconds, 1, true, || {
            conv2d_forward_by(method, g, n, &x, &k, &b, &mut y, &mut scratch, None)
        });
        // ms of one backward computing the input gradient (`input`) or the parameters'.
        let mut backward = |input: bool| {
            let (rate, _) = rate(seconds, 1, true, || {
                conv2d_backward_by(
                    method,
                    g,
                    n,
                    &x,
                    &k,
                    &mut dy,
                    None,
                    input.then_some(&mut dx[..]),
                    (!input).then_some((&mut dk[..], &mut db[..])),
                    &mut scratch,
                )
            });
            1e3 / rate
        };
        let params = backward(false);
        let input = input_gradient.then(|| backward(true));
        (1e3 / forward, params, input)
    })
}

/// A MobileNet-shaped depthwise layer (batch 16, 64×64×64, 3×3 stride 1 same) by grouped
/// im2col + GEMM (one product per channel, what the engine did before) and by the depthwise
/// kernel, at the bench's threads: ms per forward and per backward (input and parameter
/// gradients).
fn depthwise_comparison(options: &BenchOptions) -> [(f64, f64); 2] {
    let g = depthwise_layer();
    let n = 16;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x: Vec<f32> = (0..n * g.in_len()).map(|_| rng.gen()).collect();
    let mut dy: Vec<f32> = (0..n * g.out_len()).map(|_| rng.gen()).collect();
    let k: Vec<f32> = (0..g.kernel_len()).map(|_| rng.gen()).collect();
    let b = vec![0.1f32; g.filters];
    let (mut dk, mut db) = (vec![0.0f32; k.len()], vec![0.0f32; b.len()]);
    let mut dx = vec![0.0f32; x.len()];
    let mut y = vec![0.0f32; n * g.out_len()];
    let mut scratch = ConvScratch::new(&g, n, true);
    let seconds = options.seconds / 4.0;
    [ConvMethod::Im2col, ConvMethod::Depthwise].map(|method| {
        let (forward, _) = rate(seconds, 1, true, || {
            conv2d_forward_by(method, &g, n, &x, &k, &b, &mut y, &mut scratch, None)
        });
        let (backward, _) = rate(seconds, 1, true, || {
            conv2d_backward_by(
                method,
                &g,
                n,
                &x,
                &k,
                &mut dy,
                None,
                Some(&mut dx),
                Some((&mut dk, &mut db)),
                &mut scratch,
            )
        });
        (1e3 / forward, 1e3 / backward)
    })
}

fn depthwise_layer() -> ConvGeom {
    ConvGeom::new([64, 64, 64], 64, [3, 3], [1, 1], Padding::Same, [1, 1], 64)
}

/// One net with its batch, measured by the profiling pass and then round by round.
struct NetBench {
    ir: ModelIr,
    net: Network,
    n: usize,
    images: Vec<f32>,
    labels: Vec<u32>,
    weights: Vec<f32>,
}

impl NetBench {
    fn new(ir: ModelIr, n: usize) -> miette::Result<NetBench> {
        let net = Network::new(&ir, 7, OptimizerConfig::adam())?;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let per: usize = ir.input.iter().product();
        Ok(NetBench {
            images: (0..n * per).map(|_| rng.gen()).collect(),
            labels: (0..n).map(|_| rng.gen_range(0..10)).collect(),
            weights: (0..n).map(|_| rng.gen_range(0.5..2.0)).collect(),
            ir,
            net,
            n,
        })
    }

    /// Forward images/s over at least `seconds`, and the seconds timed.
    fn infer(&mut self, seconds: f64, warm_up: bool) -> (f64, f64) {
        let (net, images, n) = (&mut self.net, &self.images, self.n);
        rate(seconds, n, warm_up, || {
            net.predict(images, n)
                .expect("benchmark batch is well-formed");
        })
    }

    /// Training images/s over at least `seconds`, and the seconds timed.
    fn train(&mut self, seconds: f64, warm_up: bool) -> (f64, f64) {
        let batch = Batch::classes(&self.images, &self.labels, &self.weights);
        let net = &mut self.net;
        rate(seconds, self.n, warm_up, || {
            net.train_batch(&batch, 1e-3)
                .expect("benchmark batch is well-formed");
        })
    }
}

/// The training fusion's own effect (convolution + batchnorm + max-pool as one operator,
/// `nn::fusion`): the same net trained with it and without, alternating in rounds, with each
/// graph's step memory. The results are the same bits either way (a test checks it).
fn fusion_pairs(b: &mut NetBench, options: &BenchOptions) {
    let mut pairs = Pairs::new();
    // Images/s of each side, for their medians.
    let (mut fused, mut apart) = (Pairs::new(), Pairs::new());
    let mut memory = [0.0; 2];
    for _ in 0..options.rounds {
        let mut rate = [0.0; 2];
        for (side, on) in [true, false].into_iter().enumerate() {
            b.net.set_fusion(on);
            b.train(0.0, true);
            memory[side] = mib(b.net.memory(b.n, true).total());
            rate[side] = b.train(options.seconds, false).0;
        }
        fused.push(rate[0]);
        apart.push(rate[1]);
        pairs.push(rate[0] / rate[1]);
    }
    b.net.set_fusion(true);
    println!(
        "{} training, convolution + batchnorm (+ max-pool) fused: {:.1} images/s, {:.1} MiB a step; run apart: {:.1} images/s, {:.1} MiB; {}",
        b.ir.name,
        fused.summary().0,
        memory[0],
        apart.summary().0,
        memory[1],
        pairs.line("fused", "apart")
    );
}

/// The profiling pass of one net: images/s, GFLOP/s, memory, where a forward batch's and a
/// training step's time goes, and the share of the step's thread time outside GEMM.
fn profile_net(b: &mut NetBench, options: &BenchOptions) {
    let (ir, n) = (b.ir.clone(), b.n);
    let flops = ir.total_flops() as f64;
    // Warm-ups first (they compile the graphs), so GEMM time and the profile cover exactly
    // the timed batches.
    b.infer(0.0, true);
    b.train(0.0, true);
    b.net.set_profiling(true);
    gemm::set_timing(true);
    let (infer, infer_wall) = b.infer(options.seconds, false);
    let infer_gemm = gemm::timed_seconds();
    gemm::set_timing(true);
    let (train, train_wall) = b.train(options.seconds, false);
    let train_gemm = gemm::timed_seconds();
    gemm::set_timing(false);
    let net = &b.net;
    let memory = net.memory(n, true);
    let peak = peak_gflops(options.threads);
    println!(
        "{} ({:.1} MFLOP/image forward, {} parameters)",
        ir.name,
        flops / 1e6,
        ir.total_params()
    );
    println!(
        "  forward   {:8.1} images/s  {:6.1} GFLOP/s  ({:.0}% of the {:.0} GFLOP/s peak)",
        infer,
        infer * flops / 1e9,
        100.0 * infer * flops / 1e9 / peak,
        peak
    );
    // A training step is about three forward passes of work (forward, input and weight gradients).
    println!(
        "  training  {:8.1} images/s  {:6.1} GFLOP/s  ({:.0}% of the {:.0} GFLOP/s peak)",
        train,
        3.0 * train * flops / 1e9,
        100.0 * 3.0 * train * flops / 1e9 / peak,
        peak
    );
    println!(
        "  training step memory: {:.1} MiB (parameters {:.1}, gradients {:.1}, optimizer {:.1}, activations+scratch {:.1})",
        mib(memory.total()),
        mib(memory.parameters),
        mib(memory.gradients),
        mib(memory.optimizer),
        mib(memory.workspace)
    );
    let profile = net.profile(false);
    let total: f64 = profile.iter().map(|(_, f, _)| f).sum();
    println!("  where a forward (inference) batch's time goes:");
    for (name, f, _) in profile.iter().filter(|(_, f, _)| f / total > 0.01) {
        println!(
            "    {name:<24} {:6.1} ms  {:4.1}%",
            f * 1e3,
            100.0 * f / total
        );
    }
    let profile = net.profile(true);
    let total: f64 = profile.iter().map(|(_, f, b)| f + b).sum();
    println!("  where a training step's time goes (forward / backward, share of step):");
    for (name, f, b) in profile.iter().filter(|(_, f, b)| (f + b) / total > 0.01) {
        println!(
            "    {name:<24} {:6.1} / {:6.1} ms  {:4.1}%",
            f * 1e3,
            b * 1e3,
            100.0 * (f + b) / total
        );
    }
    // Everything outside the kernels: luminal's execution of the graph, the loss and the
    // optimizer update (training), padding and copying the batch in.
    let share = |kernels: f64, rate: f64| 100.0 * kernels * rate / n as f64;
    let infer_kernels: f64 = net.profile(false).iter().map(|(_, f, _)| f).sum();
    let train_kernels: f64 = net.profile(true).iter().map(|(_, f, b)| f + b).sum();
    println!(
        "  luminal graphs: {} nodes (training), {} (inference); the layer kernels take {:.1}% of a training step, {:.1}% of an inference batch",
        net.graph_nodes(n, true).unwrap_or(0),
        net.graph_nodes(n, false).unwrap_or(0),
        share(train_kernels, train),
        share(infer_kernels, infer)
    );
    // The products' thread-seconds (GEMM and direct convolution) against the threads' time
    // over the same batches: what is left is memory-bound passes, bookkeeping and idling.
    let outside = |gemm_seconds: f64, wall: f64| {
        100.0 * (1.0 - gemm_seconds / (wall * options.threads as f64))
    };
    println!(
        "  outside GEMM and direct convolution: {:.1}% of a training step's thread time, {:.1}% of an inference batch's ({} threads)",
        outside(train_gemm, train_wall),
        outside(infer_gemm, infer_wall),
        options.threads
    );
    // Switching off also clears the timers: the rounds run unprofiled.
    b.net.set_profiling(false);
}
/// Per net: ours against PyTorch, pair by pair, forward and training.
struct NetPairs {
    infer: Pairs,
    train: Pairs,
}

/// `rounds` rounds of ours then theirs, forward then training, for every net; PyTorch
/// stays warm in one process (scripts/bench_torch.py).
fn paired_rounds(nets: &mut [NetBench], options: &BenchOptions) -> Result<Vec<NetPairs>, String> {
    let mut torch = Warm::start(
        &options.python,
        "bench_torch.py",
        &[options.threads.to_string(), options.batch.to_string()],
        "is torch importable by GPL_BENCH_PYTHON?",
    )?;
    let mut theirs = |what: &str, net: &str| -> Result<(f64, String), String> {
        let v = torch.ask(&format!("{what} {net} {}", options.seconds))?;
        let rate = v["rate"]
            .as_f64()
            .ok_or_else(|| format!("no rate in `{v}`"))?;
        Ok((rate, v["torch"].as_str().unwrap_or("?").to_string()))
    };
    let mut pairs: Vec<NetPairs> = nets
        .iter()
        .map(|_| NetPairs {
            infer: Pairs::new(),
            train: Pairs::new(),
        })
        .collect();
    for round in 1..=options.rounds {
        let mut line = format!("round {round}, images/s gpl | pytorch:");
        for (b, p) in nets.iter_mut().zip(&mut pairs) {
            let name = b.ir.name.clone();
            let (ours_infer, _) = b.infer(options.seconds, false);
            let (theirs_infer, version) = theirs("infer", &name)?;
            let (ours_train, _) = b.train(options.seconds, false);
            let (theirs_train, _) = theirs("train", &name)?;
            p.infer.push(ours_infer / theirs_infer);
            p.train.push(ours_train / theirs_train);
            line.push_str(&format!(
                " {name} forward {ours_infer:.0} | {theirs_infer:.0}, training {ours_train:.0} | {theirs_train:.0} (pytorch {version});"
            ));
        }
        println!("{}", line.trim_end_matches(';'));
    }
    Ok(pairs)
}

pub fn run(options: &BenchOptions) -> miette::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .build()
        .map_err(|e| miette::miette!("thread pool: {e}"))?;
    // Networks are not Send: the whole bench runs inside the pool.
    pool.install(|| run_in_pool(options))
}

fn run_in_pool(options: &BenchOptions) -> miette::Result<()> {
    println!(
        "gpl bench engine: batch {}, {} threads, ≥{} s per figure, {} paired rounds (shared machine: expect noise)",
        options.batch, options.threads, options.seconds, options.rounds
    );
    // One thread per GEMM call for both backends: the engine threads over batch parts.
    gemm::configure();
    println!("GEMM backends, single thread, GFLOP/s (gemm 0.17 | matrixmultiply 0.3):");
    for (label, g, m) in gemm_comparison(options.seconds) {
        println!("  {label:<26} {g:7.1} | {m:7.1}");
    }
    // The comparison leaves the last backend set; restore the engine's default choice.
    gemm::set_backend(Backend::MatrixMultiply);
    println!(
        "  the engine uses {:?} (docs/decisions.md, engine)",
        gemm::backend()
    );
    for (name, g, input_gradient) in compared_layers() {
        let [gemm_ms, direct_ms] = layer_comparison(&g, input_gradient, options);
        let ms = |(forward, params, input): (f64, f64, Option<f64>)| match input {
            Some(input) => format!("{forward:.1} / {params:.1} / {input:.1}"),
            None => format!("{forward:.1} / {params:.1}"),
        };
        println!(
            "{name}, batch {}, {} threads), ms forward / kernel gradient{}: im2col+GEMM {}, direct {}; the engine uses {:?}",
            options.batch,
            options.threads,
            if input_gradient { " / input gradient" } else { "" },
            ms(gemm_ms),
            ms(direct_ms),
            g.method()
        );
    }
    let [gemm_ms, depthwise_ms] = depthwise_comparison(options);
    println!(
        "depthwise layer (64x64x64, 3x3 stride 1 same, batch 16, {} threads), ms forward / backward (input + parameter gradients): grouped im2col+GEMM {:.1} / {:.1}, depthwise kernel {:.1} / {:.1}; the engine uses {:?}",
        options.threads,
        gemm_ms.0,
        gemm_ms.1,
        depthwise_ms.0,
        depthwise_ms.1,
        depthwise_layer().method()
    );
    let mut nets = Vec::new();
    for ir in [design_net(), bigger_cnn()] {
        let mut b = NetBench::new(ir, options.batch)?;
        profile_net(&mut b, options);
        nets.push(b);
    }
    // The training stage's loop against the raw step (issue: within 5%), bigger CNN; an epoch
    // of about twice the figure time, since one epoch is a single sample.
    let bigger = nets.len() - 1;
    let bigger_train = nets[bigger].train(options.seconds, false).0;
    let batches =
        ((2.0 * options.seconds * bigger_train / options.batch as f64).ceil() as usize).max(8);
    let epoch = crate::bench::epoch::epoch_vs_step(&bigger_cnn(), options.batch, batches)?;
    println!(
        "bigger_cnn training epoch through the train stage's loop ({} images: shuffle, class weights, keras_default augmentation on the producer thread): {:.1} images/s vs raw step {:.1} images/s ({:.1}% of raw)",
        epoch.images,
        epoch.epoch,
        epoch.raw_step,
        100.0 * epoch.epoch / epoch.raw_step
    );
    fusion_pairs(&mut nets[bigger], options);
    if let Some(rss) = peak_rss() {
        println!(
            "peak resident memory of the benchmark process: {:.1} MiB",
            mib(rss)
        );
    }
    if options.skip_torch {
        println!("pytorch: skipped (--no-torch)");
        return Ok(());
    }
    match paired_rounds(&mut nets, options) {
        Err(why) => println!("pytorch: skipped ({why})"),
        Ok(pairs) => {
            for (b, p) in nets.iter().zip(&pairs) {
                // The bigger CNN's lines are the headline (issue 19's targets).
                let prefix = if b.ir.name == "bigger_cnn" {
                    String::new()
                } else {
                    format!("{} ", b.ir.name)
                };
                println!("{}", p.train.line(&format!("{prefix}train"), "pytorch"));
                println!("{}", p.infer.line(&format!("{prefix}infer"), "pytorch"));
            }
        }
    }
    Ok(())
}
