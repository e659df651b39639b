//! The network as a whole: wiring of gradients through every layer kind, frozen layers,
//! bit-exact resume, checkpoints, input gradients, errors, thread-count determinism, learning.

use gpl::nn::ir::{Activation, LayerIr, LayerOp, ModelIr, Padding, Regularizer};
use gpl::nn::learner::{Batch, Learner};
use gpl::nn::ops::conv::{ConvGeom, ConvMethod};
use gpl::nn::{EngineError, Network, OptimizerConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn conv(
    filters: usize,
    k: usize,
    stride: usize,
    padding: Padding,
    activation: Activation,
) -> LayerOp {
    LayerOp::Conv2d {
        filters,
        kernel: [k, k],
        stride: [stride, stride],
        padding,
        dilation: [1, 1],
        groups: 1,
        activation,
        regularizer: Regularizer {
            l1: 0.001,
            l2: 0.01,
        },
    }
}

/// A small model touching every layer kind the IR has.
fn small_model(dropout: f32) -> ModelIr {
    let ops = vec![
        conv(4, 3, 1, Padding::Same, Activation::Elu { alpha: 1.0 }),
        LayerOp::BatchNorm {
            momentum: 0.9,
            epsilon: 1e-3,
        },
        LayerOp::MaxPool {
            size: [2, 2],
            stride: [2, 2],
            padding: Padding::Same,
        },
        LayerOp::Conv2d {
            filters: 4,
            kernel: [3, 3],
            stride: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            groups: 2,
            activation: Activation::Tanh,
            regularizer: Regularizer::default(),
        },
        LayerOp::Upsample { factor: 2 },
        LayerOp::AvgPool {
            size: [3, 3],
            stride: [2, 2],
            padding: Padding::Valid,
        },
        LayerOp::Activation(Activation::LeakyRelu { alpha: 0.2 }),
        LayerOp::Flatten,
        LayerOp::Dropout { rate: dropout },
        LayerOp::Dense {
            units: 6,
            activation: Activation::Sigmoid,
            regularizer: Regularizer { l1: 0.0, l2: 0.02 },
        },
        LayerOp::Dense {
            units: 3,
            activation: Activation::Softmax,
            regularizer: Regularizer::default(),
        },
    ];
    ModelIr::build(
        "small",
        vec![9, 7, 2],
        ops.into_iter().map(|o| (None, o)).collect(),
    )
    .unwrap()
}

struct Data {
    images: Vec<f32>,
    labels: Vec<u32>,
    weights: Vec<f32>,
}

fn data(n: usize, per: usize, classes: u32, seed: u64) -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Data {
        images: (0..n * per).map(|_| rng.gen()).collect(),
        labels: (0..n).map(|_| rng.gen_range(0..classes)).collect(),
        weights: (0..n).map(|_| rng.gen_range(0.5..1.5)).collect(),
    }
}

impl Data {
    fn batch(&self) -> Batch<'_> {
        Batch::classes(&self.images, &self.labels, &self.weights)
    }
}

#[test]
fn parameter_gradients_match_finite_differences_through_every_layer_kind() {
    let ir = small_model(0.0);
    let d = data(5, 9 * 7 * 2, 3, 1);
    let mut net = Network::new(&ir, 3, OptimizerConfig::adam()).unwrap();
    net.compute_gradients(&d.batch()).unwrap();
    let names: Vec<String> = net
        .params()
        .iter()
        .filter(|p| p.trainable)
        .map(|p| p.name.clone())
        .collect();
    let base = net.named_state();
    for name in names {
        let analytic = net.gradient(&name).unwrap().to_vec();
        // A few elements per tensor in f32: a wiring check (kernels are checked in f64).
        // Skip weights next to the L1 kink at zero, where differences straddle two slopes.
        let values = &base[&name].data;
        let picks = (0..analytic.len())
            .filter(|&i| values[i].abs() > 0.02)
            .step_by((analytic.len() / 3).max(1));
        for idx in picks {
            let eval = |delta: f32| {
                let mut probe = Network::new(&ir, 3, OptimizerConfig::adam()).unwrap();
                let mut state = base.clone();
                state.get_mut(&name).unwrap().data[idx] += delta;
                probe.load_state(&state).unwrap();
                probe.compute_gradients(&d.batch()).unwrap().loss
            };
            let h = 3e-3;
            let numeric = (eval(h) - eval(-h)) / (2.0 * h as f64);
            let err = (numeric - analytic[idx] as f64).abs();
            assert!(
                err < 2e-3 + 2e-2 * numeric.abs(),
                "{name}[{idx}]: numeric {numeric} vs analytic {}",
                analytic[idx]
            );
        }
    }
}

#[test]
fn resume_from_state_is_bit_exact_with_dropout_and_batchnorm() {
    let ir = small_model(0.3);
    let batches: Vec<Data> = (0..5).map(|s| data(6, 9 * 7 * 2, 3, 10 + s)).collect();
    let mut a = Network::new(&ir, 5, OptimizerConfig::adam()).unwrap();
    for b in &batches[..3] {
        a.train_batch(&b.batch(), 1e-2).unwrap();
    }
    let saved = a.state();
    for b in &batches[3..] {
        a.train_batch(&b.batch(), 5e-3).unwrap();
    }
    let mut b = Network::new(&ir, 5, OptimizerConfig::adam()).unwrap();
    b.load_state(&saved).unwrap();
    for batch in &batches[3..] {
        b.train_batch(&batch.batch(), 5e-3).unwrap();
    }
    assert_eq!(a.state(), b.state());
    assert_eq!(a.step(), 5);
}

#[test]
fn checkpoint_round_trip_rebuilds_the_network() {
    let ir = small_model(0.3);
    let d = data(4, 9 * 7 * 2, 3, 2);
    let mut net = Network::new(&ir, 1, OptimizerConfig::sgd(0.9, true)).unwrap();
    net.train_batch(&d.batch(), 0.1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    net.save(&path).unwrap();
    let mut back = Network::load(&path).unwrap();
    assert_eq!(back.ir(), net.ir());
    assert_eq!(back.state(), net.state());
    assert_eq!(
        back.predict(&d.images, 4).unwrap(),
        net.predict(&d.images, 4).unwrap()
    );
    let err = Network::load(&dir.path().join("missing.safetensors"))
        .err()
        .expect("missing file is an error");
    assert!(matches!(err, EngineError::Io { .. }));
}

#[test]
fn frozen_layers_keep_their_weights_and_get_no_gradient() {
    let mut ir = small_model(0.0);
    ir.layers[0].trainable = false;
    ir.layers[1].trainable = false;
    let d = data(4, 9 * 7 * 2, 3, 3);
    let mut net = Network::new(&ir, 2, OptimizerConfig::adam()).unwrap();
    let before = net.state();
    net.train_batch(&d.batch(), 0.1).unwrap();
    let after = net.state();
    for name in [
        "conv2d_1/kernel",
        "conv2d_1/bias",
        "batch_normalization_1/gamma",
        "batch_normalization_1/moving_mean",
    ] {
        assert_eq!(before[name], after[name], "{name} changed");
        assert!(net.gradient(name).is_none());
    }
    assert_ne!(before["conv2d_2/kernel"], after["conv2d_2/kernel"]);
    // The autograd pass adds no backward node below the first trainable layer (conv2d_2,
    // layer 3): input + forward layers + loss + the loss's backward + layers 3.. backward.
    let layers = ir.layers.len();
    assert_eq!(
        net.graph_nodes(4, true),
        Some(1 + layers + 2 + (layers - 3))
    );
}

#[test]
fn input_and_activation_gradients_match_finite_differences() {
    let ir = small_model(0.5);
    let d = data(2, 9 * 7 * 2, 3, 4);
    let mut net = Network::new(&ir, 6, OptimizerConfig::adam()).unwrap();
    net.train_batch(&d.batch(), 0.01).unwrap();
    let classes = [2u32, 0];
    let input = net
        .class_score_gradients(&d.images, &classes, None)
        .unwrap();
    assert_eq!(input.gradients.shape, vec![2, 9, 7, 2]);
    let score = |net: &mut Network, images: &[f32]| -> f64 {
        let logits = net.logits(images, 2).unwrap();
        (logits[2] + logits[3]) as f64
    };
    for idx in [0, 40, 125] {
        let h = 1e-2;
        let mut x = d.images.clone();
        x[idx] += h;
        let up = score(&mut net, &x);
        x[idx] -= 2.0 * h;
        let down = score(&mut net, &x);
        let numeric = (up - down) / (2.0 * h as f64);
        let analytic = input.gradients.data[idx] as f64;
        assert!(
            (numeric - analytic).abs() < 1e-3 + 2e-2 * numeric.abs(),
            "input[{idx}]: {numeric} vs {analytic}"
        );
    }
    let at = net
        .class_score_gradients(&d.images, &classes, Some(3))
        .unwrap();
    assert_eq!(at.activations.shape, vec![2, 3, 2, 4]);
    assert_eq!(at.gradients.data.len(), at.activations.data.len());
    assert!(at.gradients.data.iter().any(|g| *g != 0.0));
    assert_eq!(at.logits.data, net.logits(&d.images, 2).unwrap());
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut ir = small_model(0.0);
    let mut net = Network::new(&ir, 0, OptimizerConfig::adam()).unwrap();
    let d = data(2, 9 * 7 * 2, 3, 5);
    let short = Batch::classes(&d.images[1..], &d.labels, &d.weights);
    assert!(matches!(
        net.compute_gradients(&short),
        Err(EngineError::Batch { .. })
    ));
    let bad_label = Batch::classes(&d.images, &[0, 3], &d.weights);
    assert!(matches!(
        net.compute_gradients(&bad_label),
        Err(EngineError::Label { label: 3, .. })
    ));

    let mut nan = d.images.clone();
    nan[3] = f32::NAN;
    let before = net.state();
    let err = net
        .compute_gradients(&Batch::classes(&nan, &d.labels, &d.weights))
        .unwrap_err();
    assert!(matches!(err, EngineError::NonFiniteLoss { .. }), "{err}");
    assert_eq!(
        net.state(),
        before,
        "a diverged step must not touch the weights or running stats"
    );

    ir.layers[4].output = vec![7, 7, 4];
    let err = Network::new(&ir, 0, OptimizerConfig::adam())
        .err()
        .expect("stale shape is caught");
    assert!(err.to_string().contains("up_sampling2d_1"), "{err}");
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let ir = small_model(0.2);
    let d = data(16, 9 * 7 * 2, 3, 6);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut net = Network::new(&ir, 9, OptimizerConfig::rmsprop()).unwrap();
            for _ in 0..3 {
                net.train_batch(&d.batch(), 1e-2).unwrap();
            }
            net.state()
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn a_small_cnn_learns_a_separable_problem() {
    // Class = which half of the image is bright.
    let ops = vec![
        conv(4, 3, 2, Padding::Same, Activation::Relu),
        LayerOp::GlobalAvgPool,
        LayerOp::Dense {
            units: 2,
            activation: Activation::Softmax,
            regularizer: Regularizer::default(),
        },
    ];
    let ir = ModelIr::build(
        "tiny",
        vec![8, 8, 1],
        ops.into_iter().map(|o| (None, o)).collect(),
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = 32;
    let labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    let images: Vec<f32> = (0..n * 64)
        .map(|i| {
            let (s, x) = (i / 64, i % 8);
            let bright = (x < 4) == (labels[s] == 0);
            (if bright { 0.8 } else { 0.1 }) + rng.gen::<f32>() * 0.1
        })
        .collect();
    let weights = vec![1.0; n];
    let mut net = Network::new(&ir, 1, OptimizerConfig::adam()).unwrap();
    let batch = Batch::classes(&images, &labels, &weights);
    let first = net.train_batch(&batch, 0.05).unwrap().loss;
    let mut last = first;
    for _ in 0..150 {
        last = net.train_batch(&batch, 0.05).unwrap().loss;
    }
    assert!(last < first * 0.3, "loss {first} → {last}");
    let probs = net.predict(&images, n).unwrap();
    let correct = probs
        .chunks(2)
        .zip(&labels)
        .filter(|(p, &l)| (p[1] > p[0]) == (l == 1))
        .count();
    assert!(correct >= 30, "{correct}/32");
}

#[test]
fn fused_inference_matches_the_layers_run_one_by_one() {
    // Inference runs a convolution with the batchnorm (and activation layer) after it in one
    // pass, and pools each sample in cache where a max-pool follows: the same loops in the
    // same order, so the same bits as the layers apart.
    let wide_direct = ConvGeom::new([5, 9, 6], 8, [3, 3], [1, 1], Padding::Same, [1, 1], 1)
        .method()
        == ConvMethod::Direct;
    for (ir, per, fewer_nodes) in [
        // conv → batchnorm → max-pool ("same", clipped windows).
        (small_model(0.0), 9 * 7 * 2, 2),
        // conv → batchnorm → max-pool, conv → batchnorm, conv → batchnorm → relu6.
        (conv_bn_stack(), 10 * 9 * 2, 2 + 1 + 2),
        // conv → overlapping max-pool; a wide convolution → max-pool where it runs direct.
        (conv_pool_model(), 12 * 20 * 3, 1 + usize::from(wide_direct)),
    ] {
        let n = 5;
        let d = data(n, per, 3, 8);
        let run = |fusion: bool| {
            let mut net = Network::new(&ir, 3, OptimizerConfig::adam()).unwrap();
            net.set_fusion(fusion);
            for _ in 0..3 {
                // Moves the batchnorms' running averages away from 0 and 1.
                net.train_batch(&d.batch(), 1e-2).unwrap();
            }
            let logits = net.logits(&d.images, n).unwrap();
            (logits, net.graph_nodes(n, false).unwrap())
        };
        let (fused, apart) = (run(true), run(false));
        assert_eq!(
            fused.1 + fewer_nodes,
            apart.1,
            "{}: fusion did not run",
            ir.name
        );
        assert_eq!(fused.0, apart.0, "{}: fusion changed the outputs", ir.name);
    }
}

/// Max-pools after convolutions without a batchnorm: one of 3 input channels (direct on any
/// CPU) with overlapping windows, one 9 pixels wide (direct where the CPU has AVX-512), and
/// a strided one (its training backward routes the pool's gradient through a stored buffer).
fn conv_pool_model() -> ModelIr {
    let pool = |size: [usize; 2], stride: [usize; 2], padding| LayerOp::MaxPool {
        size,
        stride,
        padding,
    };
    let ops = vec![
        conv(6, 3, 1, Padding::Valid, Activation::Elu { alpha: 1.0 }),
        pool([3, 3], [2, 2], Padding::Same),
        conv(8, 3, 1, Padding::Same, Activation::Relu),
        pool([1, 2], [1, 2], Padding::Valid),
        conv(8, 3, 2, Padding::Same, Activation::Relu),
        pool([2, 2], [2, 2], Padding::Valid),
        LayerOp::Flatten,
        LayerOp::Dense {
            units: 3,
            activation: Activation::Softmax,
            regularizer: Regularizer::default(),
        },
    ];
    ModelIr::build(
        "conv_pool",
        vec![12, 20, 3],
        ops.into_iter().map(|o| (None, o)).collect(),
    )
    .unwrap()
}

/// Convolutions by each method before a batchnorm: direct (2 input channels), im2col and
/// pointwise, the last batchnorm followed by its own relu6 layer.
fn conv_bn_stack() -> ModelIr {
    let norm = || LayerOp::BatchNorm {
        momentum: 0.9,
        epsilon: 1e-3,
    };
    let ops = vec![
        // 32 filters: a whole group of channels for the routed batchnorm loops (`ops::norm`).
        conv(32, 3, 1, Padding::Same, Activation::Relu),
        norm(),
        LayerOp::MaxPool {
            size: [2, 2],
            stride: [2, 2],
            padding: Padding::Valid,
        },
        conv(16, 3, 1, Padding::Same, Activation::Relu6),
        norm(),
        conv(8, 1, 1, Padding::Valid, Activation::Linear),
        norm(),
        LayerOp::Activation(Activation::Relu6),
        LayerOp::GlobalAvgPool,
        LayerOp::Dense {
            units: 3,
            activation: Activation::Softmax,
            regularizer: Regularizer::default(),
        },
    ];
    ModelIr::build(
        "conv_bn_stack",
        vec![10, 9, 2],
        ops.into_iter().map(|o| (None, o)).collect(),
    )
    .unwrap()
}

#[test]
fn fused_training_matches_the_layers_run_one_by_one() {
    // Every convolution → batchnorm pair (→ max-pool or activation), and every convolution →
    // max-pool pair, trains as one fused operator: the same kernels and loops in the same
    // order, so the same bits as the layers apart, step after step.
    for (ir, per) in [
        (conv_bn_stack(), 10 * 9 * 2),
        (small_model(0.0), 9 * 7 * 2),
        (depthwise_model(), 13 * 11 * 2),
        (conv_pool_model(), 12 * 20 * 3),
    ] {
        let n = 11;
        let d = data(n, per, 3, 21);
        let run = |fusion: bool| {
            let mut net = Network::new(&ir, 6, OptimizerConfig::adam()).unwrap();
            net.set_fusion(fusion);
            let losses: Vec<f64> = (0..4)
                .map(|_| net.train_batch(&d.batch(), 1e-2).unwrap().loss)
                .collect();
            let params: Vec<Vec<f32>> = net.params().iter().map(|p| p.value.clone()).collect();
            (losses, params, net.graph_nodes(n, true).unwrap())
        };
        let (fused, apart) = (run(true), run(false));
        let is = |layer: &LayerIr, kind: fn(&LayerOp) -> bool| kind(&layer.op);
        let conv = |op: &LayerOp| matches!(op, LayerOp::Conv2d { .. });
        let norm = |op: &LayerOp| matches!(op, LayerOp::BatchNorm { .. });
        let pool = |op: &LayerOp| matches!(op, LayerOp::MaxPool { .. });
        let pairs = (ir.layers.windows(2))
            .filter(|w| is(&w[0], conv) && is(&w[1], norm))
            .count();
        let act = |op: &LayerOp| matches!(op, LayerOp::Activation(Activation::Relu6));
        let thirds = (ir.layers.windows(3))
            .filter(|w| is(&w[0], conv) && is(&w[1], norm) && (is(&w[2], pool) || is(&w[2], act)))
            .count();
        // A max-pool right after a convolution fuses where its windows do not overlap.
        let disjoint = |op: &LayerOp| {
            matches!(op, LayerOp::MaxPool { size, stride, .. }
                if size[0] <= stride[0] && size[1] <= stride[1])
        };
        let conv_pools = (ir.layers.windows(2))
            .filter(|w| is(&w[0], conv) && is(&w[1], disjoint))
            .count();
        // Each pair is one forward and one backward node fewer, and each max-pool or
        // activation layer after it as many.
        assert_eq!(
            fused.2 + 2 * (pairs + thirds + conv_pools),
            apart.2,
            "{}: fusion did not run",
            ir.name
        );
        assert_eq!(fused.0, apart.0, "{}: losses differ", ir.name);
        assert!(fused.1 == apart.1, "{}: parameters differ", ir.name);
    }
}

#[test]
fn wide_loops_give_the_same_bits_as_the_baseline_build() {
    // The memory-bound loops run compiled for AVX2 + FMA where the CPU has them, for baseline
    // x86-64 otherwise (`nn::simd`): the same operations in the same order, so training and
    // inference give the same bits either way. (On a CPU without AVX2 both runs are baseline.)
    for (ir, per) in [
        (conv_bn_stack(), 10 * 9 * 2),
        (small_model(0.0), 9 * 7 * 2),
        (depthwise_model(), 13 * 11 * 2),
    ] {
        let n = 11;
        let d = data(n, per, 3, 23);
        let run = |wide: bool| {
            gpl::nn::simd::set_wide(wide);
            let mut net = Network::new(&ir, 6, OptimizerConfig::adam()).unwrap();
            let losses: Vec<f64> = (0..3)
                .map(|_| net.train_batch(&d.batch(), 1e-2).unwrap().loss)
                .collect();
            let params: Vec<Vec<f32>> = net.params().iter().map(|p| p.value.clone()).collect();
            let probabilities = net.probabilities(&d.images, n).unwrap();
            gpl::nn::simd::set_wide(true);
            (losses, params, probabilities)
        };
        let (wide, baseline) = (run(true), run(false));
        assert_eq!(wide.0, baseline.0, "{}: losses differ", ir.name);
        assert!(wide.1 == baseline.1, "{}: parameters differ", ir.name);
        assert!(wide.2 == baseline.2, "{}: predictions differ", ir.name);
    }
}

/// A MobileNet-style block: a depthwise convolution (groups = channels = filters, the engine's
/// depthwise kernel) with batchnorm and relu6, then a pointwise one.
fn depthwise_model() -> ModelIr {
    let depthwise = |stride: usize| LayerOp::Conv2d {
        filters: 8,
        kernel: [3, 3],
        stride: [stride, stride],
        padding: Padding::Same,
        dilation: [1, 1],
        groups: 8,
        activation: Activation::Linear,
        regularizer: Regularizer::default(),
    };
    let norm = || LayerOp::BatchNorm {
        momentum: 0.9,
        epsilon: 1e-3,
    };
    let ops = vec![
        conv(8, 3, 1, Padding::Same, Activation::Relu),
        depthwise(1),
        norm(),
        LayerOp::Activation(Activation::Relu6),
        depthwise(2),
        norm(),
        LayerOp::Activation(Activation::Relu6),
        conv(12, 1, 1, Padding::Valid, Activation::Relu),
        LayerOp::GlobalAvgPool,
        LayerOp::Dense {
            units: 3,
            activation: Activation::Softmax,
            regularizer: Regularizer::default(),
        },
    ];
    ModelIr::build(
        "depthwise",
        vec![13, 11, 2],
        ops.into_iter().map(|o| (None, o)).collect(),
    )
    .unwrap()
}

#[test]
fn a_depthwise_model_does_not_depend_on_the_thread_count() {
    let ir = depthwise_model();
    let d = data(12, 13 * 11 * 2, 3, 8);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut net = Network::new(&ir, 4, OptimizerConfig::adam()).unwrap();
            let mut losses = Vec::new();
            for _ in 0..3 {
                losses.push(net.train_batch(&d.batch(), 1e-2).unwrap().loss);
            }
            // Inference: the depthwise convolution fused with its batchnorm.
            let probs = net.predict(&d.images, 12).unwrap();
            (losses, probs, net.state())
        })
    };
    let one = run(1);
    assert!(one.0.iter().all(|l| l.is_finite()), "{:?}", one.0);
    assert_eq!(one, run(3));
}
