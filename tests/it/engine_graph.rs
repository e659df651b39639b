//! Models as graphs through the whole engine: gradients through forks, every join and the
//! new activations with two outputs (finite differences), one target per output, detection
//! losses through a two-level detector head (finite differences, learning a fixed batch), a frozen
//! base cut out of a graph, and the stdlib's ResNet- and MobileNet-style nets and a
//! residual model written with `from:` training on the synthetic Galaxy10.

use gpl::check::load_program;
use gpl::data::synth::{synthesize, SynthConfig};
use gpl::nn::frozen::FrozenPrefix;
use gpl::nn::ir::{Activation, LayerOp, LayerSpec, ModelIr, Padding, Regularizer};
use gpl::nn::learner::{Batch, Learner, Target};
use gpl::nn::ops::loss::{box_smooth_l1, sigmoid_focal_loss};
use gpl::nn::{EngineError, Network, OptimizerConfig};
use gpl::train::fit::{fit, FitConfig, FitContext, TrainData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn conv(filters: usize, k: usize, activation: Activation) -> LayerOp {
    LayerOp::Conv2d {
        filters,
        kernel: [k, k],
        stride: [1, 1],
        padding: Padding::Same,
        dilation: [1, 1],
        groups: 1,
        activation,
        regularizer: Regularizer { l1: 0.0, l2: 0.01 },
    }
}

fn dense(units: usize, activation: Activation) -> LayerOp {
    LayerOp::Dense {
        units,
        activation,
        regularizer: Regularizer::default(),
    }
}

fn spec(name: &str, op: LayerOp, from: &[&str]) -> LayerSpec {
    LayerSpec {
        name: Some(name.into()),
        op,
        from: from.iter().map(|s| s.to_string()).collect(),
    }
}

/// A fork, every join, relu6 / hard-swish / swish, batchnorm, and two softmax outputs.
fn graph_model() -> ModelIr {
    ModelIr::build_graph(
        "graph",
        vec![6, 5, 2],
        vec![
            spec("stem", conv(4, 3, Activation::Tanh), &[]),
            spec("left", conv(4, 3, Activation::Relu6), &["stem"]),
            spec("right", conv(4, 1, Activation::Linear), &["stem"]),
            spec(
                "right_bn",
                LayerOp::BatchNorm {
                    momentum: 0.9,
                    epsilon: 1e-3,
                },
                &[],
            ),
            spec("right_hs", LayerOp::Activation(Activation::HardSwish), &[]),
            spec("sum", LayerOp::Add, &["left", "right_hs", "stem"]),
            spec(
                "fused",
                LayerOp::WeightedSum { epsilon: 1e-4 },
                &["left", "sum"],
            ),
            spec("squeeze", LayerOp::GlobalAvgPool, &["fused"]),
            spec("excite", dense(4, Activation::Sigmoid), &[]),
            spec("gated", LayerOp::Multiply, &["fused", "excite"]),
            spec("cat", LayerOp::Concat, &["gated", "stem"]),
            spec("act", LayerOp::Activation(Activation::Swish), &[]),
            spec("flat", LayerOp::Flatten, &[]),
            spec("main", dense(3, Activation::Softmax), &[]),
            spec("aux_pool", LayerOp::GlobalAvgPool, &["sum"]),
            spec("aux", dense(2, Activation::Softmax), &[]),
        ],
        vec!["main".into(), "aux".into()],
    )
    .expect("valid graph")
}

struct Data {
    images: Vec<f32>,
    main: Vec<u32>,
    aux: Vec<u32>,
    weights: Vec<f32>,
}

fn data(n: usize, per: usize, seed: u64) -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Data {
        images: (0..n * per).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        main: (0..n).map(|_| rng.gen_range(0..3)).collect(),
        aux: (0..n).map(|_| rng.gen_range(0..2)).collect(),
        weights: (0..n).map(|_| rng.gen_range(0.5..1.5)).collect(),
    }
}

impl Data {
    fn batch(&self) -> Batch<'_> {
        Batch {
            images: &self.images,
            targets: vec![
                Target::Classes {
                    labels: &self.main,
                    label_smoothing: 0.1,
                },
                Target::Classes {
                    labels: &self.aux,
                    label_smoothing: 0.0,
                },
            ],
            weights: &self.weights,
        }
    }
}

#[test]
fn gradients_through_forks_joins_and_two_outputs_match_finite_differences() {
    let ir = graph_model();
    let d = data(4, 6 * 5 * 2, 1);
    let mut net = Network::new(&ir, 3, OptimizerConfig::adam()).unwrap();
    // Move the fusion weights off their equal start so each gets its own gradient.
    net.set_param("fused/kernel", &[0.6, 1.4]).unwrap();
    let stats = net.compute_gradients(&d.batch()).unwrap();
    let losses = net.output_losses(4).unwrap();
    assert_eq!(losses.len(), 2);

    // The first output's loss against the closed form of a smoothed cross-entropy.
    let logits = net.train_output(4, 0).unwrap();
    let mut manual = 0.0;
    for (i, row) in logits.chunks(3).enumerate() {
        let max = row.iter().fold(f32::MIN, |m, v| m.max(*v)) as f64;
        let log_sum = row
            .iter()
            .map(|v| (*v as f64 - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        let ce: f64 = (0..3)
            .map(|k| {
                let y = if k == d.main[i] as usize { 0.9 } else { 0.0 } + 0.1 / 3.0;
                y * (log_sum - row[k] as f64)
            })
            .sum();
        manual += d.weights[i] as f64 * ce;
    }
    manual /= 4.0;
    assert!(
        (losses[0] - manual).abs() < 1e-5,
        "{} vs {manual}",
        losses[0]
    );
    assert!(stats.loss > losses[0] + losses[1], "penalties come on top");

    let names: Vec<String> = net
        .params()
        .iter()
        .filter(|p| p.trainable)
        .map(|p| p.name.clone())
        .collect();
    let base = net.named_state();
    let mut checked = 0;
    for name in names {
        let analytic = net.gradient(&name).unwrap().to_vec();
        for idx in (0..analytic.len()).step_by((analytic.len() / 3).max(1)) {
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
            checked += 1;
        }
    }
    assert!(checked > 30, "{checked} gradient elements checked");
}

#[test]
fn each_output_needs_its_target() {
    let ir = graph_model();
    let d = data(3, 6 * 5 * 2, 2);
    let mut net = Network::new(&ir, 1, OptimizerConfig::adam()).unwrap();
    assert_eq!(net.output_names(), ["main", "aux"]);
    let one = Batch::classes(&d.images, &d.main, &d.weights);
    assert!(matches!(
        net.compute_gradients(&one),
        Err(EngineError::Batch {
            expected: 2,
            got: 1,
            ..
        })
    ));
    // An output ending in softmax gives probabilities: the detection losses want logits.
    let (boxes, anchor_labels) = ([0.0f32; 24], [1i32; 6]);
    let mut batch = d.batch();
    batch.targets[1] = Target::Boxes {
        values: &boxes,
        labels: &anchor_labels,
        beta: 1.0,
    };
    let err = net.compute_gradients(&batch).unwrap_err();
    assert!(
        matches!(&err, EngineError::Targets { output, reason, .. } if output == "aux" && reason.contains("softmax")),
        "{err}"
    );
    batch.targets[1] = Target::Anchors {
        labels: &anchor_labels[..3],
        classes: 2,
        alpha: 0.25,
        gamma: 2.0,
    };
    let err = net.compute_gradients(&batch).unwrap_err();
    assert!(
        matches!(&err, EngineError::Targets { output, reason, .. } if output == "aux" && reason.contains("logits")),
        "{err}"
    );
    // Inference returns every output; `predict` the first, as probabilities, and `outputs`
    // every output as the model defines it (here both softmax).
    let all = net.all_logits(&d.images, 3).unwrap();
    assert_eq!((all[0].len(), all[1].len()), (9, 6));
    let probs = net.predict(&d.images, 3).unwrap();
    for row in probs.chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let outputs = net.outputs(&d.images, 3).unwrap();
    assert_eq!(outputs[0], probs);
    for row in outputs[1].chunks(2) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn a_frozen_base_cut_out_of_a_graph_trains_like_the_whole_network() {
    // The base forks and joins; everything after `head_in` reads only it, so it caches.
    // No regularizers: the whole network would count the frozen kernels' penalty too.
    let conv = |filters, k, activation| match conv(filters, k, activation) {
        LayerOp::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            activation,
            ..
        } => LayerOp::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            activation,
            regularizer: Regularizer::default(),
        },
        other => other,
    };
    let mut ir = ModelIr::build_graph(
        "cut",
        vec![8, 8, 2],
        vec![
            spec("a", conv(3, 3, Activation::Relu), &[]),
            spec("b", conv(3, 1, Activation::Relu), &["a"]),
            spec("base_out", LayerOp::Add, &["a", "b"]),
            spec("head_in", conv(4, 3, Activation::Relu), &[]),
            spec("skip", conv(4, 1, Activation::Linear), &["head_in"]),
            spec("joined", LayerOp::Add, &["head_in", "skip"]),
            spec("pool", LayerOp::GlobalAvgPool, &[]),
            spec("out", dense(3, Activation::Softmax), &[]),
        ],
        Vec::new(),
    )
    .unwrap();
    for i in ir.ancestors(3) {
        ir.layers[i].trainable = false;
    }
    assert_eq!(FrozenPrefix::split_point(&ir), Some(3));
    let mut whole = Network::new(&ir, 5, OptimizerConfig::adam()).unwrap();
    let mut split = FrozenPrefix::new(&ir, 3, 5, OptimizerConfig::adam()).unwrap();
    let weights = whole
        .state()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("optimizer/"))
        .collect();
    split.load_weights(&weights).unwrap();
    let n = 5;
    let images: Vec<f32> = (0..n * 128)
        .map(|i| ((i * 37 % 101) as f32) / 101.0)
        .collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    let w = vec![1.0f32; n];
    for _ in 0..3 {
        let batch = Batch::classes(&images, &labels, &w);
        let (a, b) = (
            whole.train_batch(&batch, 1e-2).unwrap(),
            split.train_batch(&batch, 1e-2).unwrap(),
        );
        assert!((a.loss - b.loss).abs() < 1e-6, "{} vs {}", a.loss, b.loss);
    }
    let (a, b) = (
        whole.outputs(&images, n).unwrap(),
        split.outputs(&images, n).unwrap(),
    );
    assert_eq!((a.len(), b.len()), (1, 1));
    for (x, y) in a[0].iter().zip(&b[0]) {
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }
    // Freezing up to the join itself leaves two tensors crossing the cut: no cache.
    for l in ir.layers.iter_mut() {
        l.trainable = true;
    }
    for i in ir.ancestors(2) {
        ir.layers[i].trainable = false;
    }
    assert_eq!(FrozenPrefix::split_point(&ir), None);
}

/// Anchors per position and classes of the detector-shaped model.
const ANCHORS: usize = 2;
const DET_CLASSES: usize = 3;
/// Positions of its two levels (8×8 and 4×4) times the anchors at each.
const DET_ANCHORS: usize = (64 + 16) * ANCHORS;

/// A detector's shape in miniature: a stem, two feature levels (8×8 and, strided, 4×4), a
/// class conv and a box conv on each, and two outputs, each a `concat` of the levels'
/// flattened maps, linear (the focal loss applies the sigmoid).
fn detection_model() -> ModelIr {
    let strided = |filters| LayerOp::Conv2d {
        filters,
        kernel: [3, 3],
        stride: [2, 2],
        padding: Padding::Same,
        dilation: [1, 1],
        groups: 1,
        activation: Activation::Tanh,
        regularizer: Regularizer::default(),
    };
    ModelIr::build_graph(
        "det",
        vec![8, 8, 2],
        vec![
            spec("stem", conv(6, 3, Activation::Tanh), &[]),
            spec(
                "stem_bn",
                LayerOp::BatchNorm {
                    momentum: 0.9,
                    epsilon: 1e-3,
                },
                &[],
            ),
            spec("p1", conv(6, 3, Activation::Tanh), &[]),
            spec("p2", strided(6), &["p1"]),
            spec(
                "cls1",
                conv(ANCHORS * DET_CLASSES, 3, Activation::Linear),
                &["p1"],
            ),
            spec("cls1_flat", LayerOp::Flatten, &[]),
            spec(
                "cls2",
                conv(ANCHORS * DET_CLASSES, 3, Activation::Linear),
                &["p2"],
            ),
            spec("cls2_flat", LayerOp::Flatten, &[]),
            spec("classes", LayerOp::Concat, &["cls1_flat", "cls2_flat"]),
            spec("box1", conv(ANCHORS * 4, 3, Activation::Linear), &["p1"]),
            spec("box1_flat", LayerOp::Flatten, &[]),
            spec("box2", conv(ANCHORS * 4, 3, Activation::Linear), &["p2"]),
            spec("box2_flat", LayerOp::Flatten, &[]),
            spec("boxes", LayerOp::Concat, &["box1_flat", "box2_flat"]),
        ],
        vec!["classes".into(), "boxes".into()],
    )
    .expect("valid detector graph")
}

struct Detections {
    images: Vec<f32>,
    labels: Vec<i32>,
    boxes: Vec<f32>,
    weights: Vec<f32>,
}

/// Random anchors: about a sixth ignored, half background, a third positive.
fn detections(n: usize, seed: u64) -> Detections {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Detections {
        images: (0..n * 8 * 8 * 2)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect(),
        labels: (0..n * DET_ANCHORS)
            .map(|_| match rng.gen_range(0..6) {
                0 => -1,
                1..=3 => 0,
                _ => rng.gen_range(1..=DET_CLASSES as i32),
            })
            .collect(),
        boxes: (0..n * DET_ANCHORS * 4)
            .map(|_| rng.gen_range(-1.5..1.5))
            .collect(),
        weights: vec![1.0; n],
    }
}

impl Detections {
    fn batch(&self) -> Batch<'_> {
        Batch {
            images: &self.images,
            targets: vec![
                Target::Anchors {
                    labels: &self.labels,
                    classes: DET_CLASSES,
                    alpha: 0.25,
                    gamma: 2.0,
                },
                Target::Boxes {
                    values: &self.boxes,
                    labels: &self.labels,
                    beta: 1.0 / 9.0,
                },
            ],
            weights: &self.weights,
        }
    }
}

#[test]
fn detection_losses_through_a_two_level_head_match_finite_differences() {
    let ir = detection_model();
    let mut d = detections(3, 4);
    d.weights = vec![1.0, 0.5, 1.5];
    let mut net = Network::new(&ir, 2, OptimizerConfig::adam()).unwrap();
    let stats = net.compute_gradients(&d.batch()).unwrap();
    assert_eq!(stats.correct, 0, "accuracy counts class labels only");
    // Each output's loss is the library's loss of that output's values.
    let losses = net.output_losses(3).unwrap();
    let (cls, boxes) = (
        net.train_output(3, 0).unwrap(),
        net.train_output(3, 1).unwrap(),
    );
    assert_eq!(
        (cls.len(), boxes.len()),
        (3 * DET_ANCHORS * DET_CLASSES, 3 * DET_ANCHORS * 4)
    );
    let focal = sigmoid_focal_loss(DET_CLASSES, &cls, &d.labels, &d.weights, 0.25, 2.0, None);
    let smooth = box_smooth_l1(1.0 / 9.0, &boxes, &d.boxes, &d.labels, &d.weights, None);
    assert!(
        (losses[0] - focal).abs() < 1e-9 * focal,
        "{} vs {focal}",
        losses[0]
    );
    assert!(
        (losses[1] - smooth).abs() < 1e-9 * smooth,
        "{} vs {smooth}",
        losses[1]
    );
    assert!(stats.loss > focal + smooth, "the L2 penalties come on top");

    let names: Vec<String> = net
        .params()
        .iter()
        .filter(|p| p.trainable)
        .map(|p| p.name.clone())
        .collect();
    let base = net.named_state();
    let mut checked = 0;
    for name in names {
        let analytic = net.gradient(&name).unwrap().to_vec();
        assert!(analytic.iter().any(|g| *g != 0.0), "{name} gets a gradient");
        for idx in (0..analytic.len()).step_by((analytic.len() / 3).max(1)) {
            let eval = |delta: f32| {
                let mut probe = Network::new(&ir, 2, OptimizerConfig::adam()).unwrap();
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
            checked += 1;
        }
    }
    assert!(checked > 30, "{checked} gradient elements checked");
}

#[test]
fn an_output_changes_its_loss_with_its_target() {
    // The same compiled graph trains the class output with class labels, then anchors again:
    // each step's loss is the loss its target names.
    let ir = detection_model();
    let d = detections(2, 5);
    let mut net = Network::new(&ir, 1, OptimizerConfig::adam()).unwrap();
    net.compute_gradients(&d.batch()).unwrap();
    let nodes = net.graph_nodes(2, true);
    let labels = [7u32, 300];
    let mut batch = d.batch();
    batch.targets[0] = Target::Classes {
        labels: &labels,
        label_smoothing: 0.0,
    };
    let stats = net.compute_gradients(&batch).unwrap();
    let logits = net.train_output(2, 0).unwrap();
    let per = DET_ANCHORS * DET_CLASSES;
    let manual: f64 = logits
        .chunks(per)
        .zip(labels)
        .map(|(row, l)| {
            let max = row.iter().fold(f32::MIN, |m, v| m.max(*v)) as f64;
            let sum: f64 = row.iter().map(|v| (*v as f64 - max).exp()).sum();
            max + sum.ln() - row[l as usize] as f64
        })
        .sum::<f64>()
        / 2.0;
    let losses = net.output_losses(2).unwrap();
    assert!(
        (losses[0] - manual).abs() < 1e-6,
        "{} vs {manual}",
        losses[0]
    );
    assert!(stats.correct <= 2);
    net.compute_gradients(&d.batch()).unwrap();
    let logits = net.train_output(2, 0).unwrap();
    let focal = sigmoid_focal_loss(DET_CLASSES, &logits, &d.labels, &d.weights, 0.25, 2.0, None);
    assert!((net.output_losses(2).unwrap()[0] - focal).abs() < 1e-9 * focal);
    assert_eq!(net.graph_nodes(2, true), nodes, "the graph was not rebuilt");
}

#[test]
fn detection_targets_are_checked_against_the_outputs() {
    let ir = detection_model();
    let d = detections(2, 6);
    let mut net = Network::new(&ir, 1, OptimizerConfig::adam()).unwrap();
    // The batch with output `k`'s target replaced.
    fn fails(net: &mut Network, d: &Detections, k: usize, target: Target) -> EngineError {
        let mut batch = d.batch();
        batch.targets[k] = target;
        net.compute_gradients(&batch).unwrap_err()
    }
    // Wrong lengths.
    let err = fails(
        &mut net,
        &d,
        0,
        Target::Anchors {
            labels: &d.labels[1..],
            classes: DET_CLASSES,
            alpha: 0.25,
            gamma: 2.0,
        },
    );
    assert!(
        matches!(
            err,
            EngineError::Batch {
                what: "anchor labels",
                ..
            }
        ),
        "{err}"
    );
    let err = fails(
        &mut net,
        &d,
        1,
        Target::Boxes {
            values: &d.boxes[4..],
            labels: &d.labels,
            beta: 0.1,
        },
    );
    assert!(
        matches!(
            err,
            EngineError::Batch {
                what: "box values",
                ..
            }
        ),
        "{err}"
    );
    // A class id beyond the classes, an output that is not whole anchors, a bad α.
    let mut labels = d.labels.clone();
    labels[5] = DET_CLASSES as i32 + 1;
    let err = fails(
        &mut net,
        &d,
        0,
        Target::Anchors {
            labels: &labels,
            classes: DET_CLASSES,
            alpha: 0.25,
            gamma: 2.0,
        },
    );
    assert!(
        matches!(&err, EngineError::Targets { output, given, .. } if output == "classes" && given.contains('4')),
        "{err}"
    );
    let err = fails(
        &mut net,
        &d,
        1,
        Target::Anchors {
            labels: &d.labels,
            classes: 3,
            alpha: 0.25,
            gamma: 2.0,
        },
    );
    assert!(
        matches!(&err, EngineError::Targets { output, reason, .. } if output == "boxes" && reason.contains("multiple")),
        "{err}"
    );
    let err = fails(
        &mut net,
        &d,
        0,
        Target::Anchors {
            labels: &d.labels,
            classes: DET_CLASSES,
            alpha: 1.5,
            gamma: 2.0,
        },
    );
    assert!(matches!(err, EngineError::Targets { .. }), "{err}");
    // 3 × 3 × 6 values per image do not hold whole boxes.
    let six = ModelIr::build_graph(
        "six",
        vec![3, 3, 1],
        vec![
            spec("c", conv(6, 1, Activation::Linear), &[]),
            spec("f", LayerOp::Flatten, &[]),
        ],
        Vec::new(),
    )
    .unwrap();
    let mut net = Network::new(&six, 1, OptimizerConfig::adam()).unwrap();
    let (images, values, labels) = ([0.0f32; 9], [0.0f32; 54], [1i32; 13]);
    let err = net
        .compute_gradients(&Batch {
            images: &images,
            targets: vec![Target::Boxes {
                values: &values,
                labels: &labels,
                beta: 1.0,
            }],
            weights: &[1.0],
        })
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Targets { reason, .. } if reason.contains("4 per anchor")),
        "{err}"
    );
}

#[test]
fn a_detector_shaped_model_learns_a_fixed_batch() {
    let ir = detection_model();
    let d = detections(4, 7);
    let mut net = Network::new(&ir, 3, OptimizerConfig::adam()).unwrap();
    let losses: Vec<f64> = (0..30)
        .map(|_| net.train_batch(&d.batch(), 1e-2).unwrap().loss)
        .collect();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    let (first, last) = (losses[0], losses[29]);
    assert!(last < 0.5 * first, "the loss does not fall: {losses:?}");
    // The raw outputs are the logits and box values the losses saw.
    let outputs = net.outputs(&d.images, 4).unwrap();
    assert_eq!(
        (outputs[0].len(), outputs[1].len()),
        (4 * DET_ANCHORS * DET_CLASSES, 4 * DET_ANCHORS * 4)
    );
    assert_eq!(outputs, net.all_logits(&d.images, 4).unwrap());
}

/// Trains `ir` for a few epochs on a small synthetic Galaxy10 of `side`-pixel images and
/// returns the training loss of each epoch.
fn train_on_synthetic(ir: &ModelIr, side: usize, epochs: usize) -> Vec<f64> {
    let mut config = SynthConfig::galaxy10(48, 7);
    config.size = Some(side);
    let set = synthesize(&config).unwrap();
    let mut net = Network::new(ir, 1, OptimizerConfig::adam()).unwrap();
    let data = TrainData {
        images: &set,
        class_weights: None,
        augment: None,
    };
    let fit_config = FitConfig {
        epochs,
        batch_size: 16,
        seed: 3,
        learning_rate: 3e-3,
        ..FitConfig::default()
    };
    let outcome = fit(&mut net, &fit_config, &data, None, FitContext::default()).unwrap();
    outcome.history.epochs.iter().map(|e| e.loss).collect()
}

fn assert_learns(name: &str, losses: &[f64]) {
    assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
    assert!(
        losses.last() < losses.first(),
        "{name}: the training loss does not fall: {losses:?}"
    );
}

#[test]
fn stdlib_resnet_and_mobilenet_train_on_synthetic_galaxy10() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nets.gpl");
    std::fs::write(
        &path,
        "import \"stdlib/resnet.gpl\"\nimport \"stdlib/mobilenet.gpl\"\n\
         model r(classes: 10) { use resnet_small(classes, size: 24, w1: 8, w2: 16, w3: 16) }\n\
         model m(classes: 10) { use mobilenet_small(classes, size: 24, alpha: 0.25) }\n",
    )
    .unwrap();
    let program = load_program(&path, None).unwrap_or_else(|d| panic!("{}", d.render_plain()));
    let ir = |name: &str| {
        program
            .models
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.default_ir.clone())
            .unwrap()
    };
    let resnet = ir("r");
    // Two projection shortcuts and an identity one.
    let adds: Vec<_> = resnet
        .layers
        .iter()
        .filter(|l| l.op == LayerOp::Add)
        .map(|l| resnet.source_name(l.inputs[1]).to_string())
        .collect();
    assert_eq!(adds, ["stem_relu", "block2_proj_bn", "block3_proj_bn"]);
    assert_learns("resnet_small", &train_on_synthetic(&resnet, 24, 4));

    let mobilenet = ir("m");
    // alpha 0.25 scales 32..256 channels to 8..64; depthwise convs have one group per channel.
    let depthwise = mobilenet
        .layers
        .iter()
        .filter(|l| matches!(l.op, LayerOp::Conv2d { groups, filters, .. } if groups == filters && groups > 1))
        .count();
    assert_eq!(depthwise, 4);
    assert_eq!(mobilenet.layers[0].output, vec![12, 12, 8]);
    assert_learns("mobilenet_small", &train_on_synthetic(&mobilenet, 24, 4));
}

#[test]
fn a_residual_model_written_with_from_and_add_trains() {
    let program = load_program(std::path::Path::new("tests/cases/good/residual.gpl"), None)
        .unwrap_or_else(|d| panic!("{}", d.render_plain()));
    let ir = &program.trains().next().expect("a train block").ir;
    assert!(ir.layers.iter().any(|l| l.op == LayerOp::Add));
    let frozen: Vec<&str> = ir
        .layers
        .iter()
        .filter(|l| !l.trainable)
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(frozen, ["stem", "stem_bn", "stem_act", "a1", "a2"]);
    let before = Network::new(ir, 1, OptimizerConfig::adam())
        .unwrap()
        .named_state();
    let losses = train_on_synthetic(ir, 69, 3);
    assert_learns("residual", &losses);
    // The frozen stem did not move (the network is rebuilt from the same seed).
    let mut net = Network::new(ir, 1, OptimizerConfig::adam()).unwrap();
    let mut config = SynthConfig::galaxy10(16, 2);
    config.size = Some(69);
    let set = synthesize(&config).unwrap();
    let images: Vec<f32> = set.images.iter().map(|&b| b as f32 / 255.0).collect();
    let w = vec![1.0f32; 16];
    net.train_batch(&Batch::classes(&images, &set.labels, &w), 1e-2)
        .unwrap();
    let after = net.named_state();
    for name in ["stem/kernel", "a2/bias", "stem_bn/gamma"] {
        assert_eq!(before[name], after[name], "{name} is frozen");
    }
    assert_ne!(before["b1/kernel"], after["b1/kernel"]);
}
