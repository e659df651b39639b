//! Whole networks against PyTorch in float64: logits, loss, every parameter gradient, and
//! parameters (plus running statistics) after three Keras-Adam steps. The report's bigger
//! CNN with batchnorm (fixture: tests/fixtures/engine/make_torch_fixtures.py) and a
//! branching model with a fork, an add, a concatenation and two outputs, one of them with
//! label smoothing (tests/fixtures/engine/make_torch_graph_fixture.py).

use gpl::nn::ir::{Activation, LayerOp, LayerSpec, ModelIr, Padding, Regularizer};
use gpl::nn::learner::{Batch, Target};
use gpl::nn::{Network, OptimizerConfig};

const N: usize = 4;
const SIDE: usize = 69;
const FILTERS: [usize; 4] = [32, 64, 128, 128];

/// splitmix64(seed · 1_000_003 + i) >> 40 as an exact f32 in [0, 1): the script's `det`.
pub(crate) fn det(seed: u64, len: usize) -> Vec<f32> {
    (0..len as u64)
        .map(|i| {
            let mut z = seed
                .wrapping_mul(1_000_003)
                .wrapping_add(i)
                .wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / 16_777_216.0
        })
        .collect()
}

pub(crate) fn signed(seed: u64, len: usize, scale: f64) -> Vec<f32> {
    det(seed, len)
        .into_iter()
        .map(|v| (v * 2.0 - 1.0) * scale as f32)
        .collect()
}

pub(crate) fn model() -> ModelIr {
    let mut ops = Vec::new();
    for f in FILTERS {
        ops.push(LayerOp::Conv2d {
            filters: f,
            kernel: [3, 3],
            stride: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            groups: 1,
            activation: Activation::Relu,
            regularizer: Regularizer::default(),
        });
        ops.push(LayerOp::BatchNorm {
            momentum: 0.99,
            epsilon: 1e-3,
        });
        ops.push(LayerOp::MaxPool {
            size: [2, 2],
            stride: [2, 2],
            padding: Padding::Valid,
        });
    }
    ops.push(LayerOp::Flatten);
    ops.push(LayerOp::Dense {
        units: 512,
        activation: Activation::Relu,
        regularizer: Regularizer::default(),
    });
    ops.push(LayerOp::Dense {
        units: 10,
        activation: Activation::Softmax,
        regularizer: Regularizer::default(),
    });
    ModelIr::build(
        "bigger_cnn",
        vec![SIDE, SIDE, 3],
        ops.into_iter().map(|o| (None, o)).collect(),
    )
    .expect("valid model")
}

/// The script's `initial_params`, same names, order and seeds.
pub(crate) fn initial_params() -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    let (mut seed, mut cin, mut side) = (1u64, 3usize, SIDE);
    for (i, f) in FILTERS.iter().enumerate() {
        let i = i + 1;
        let limit = (6.0 / (9 * cin + 9 * f) as f64).sqrt();
        out.push((
            format!("conv2d_{i}/kernel"),
            signed(seed, 9 * cin * f, limit),
        ));
        out.push((format!("conv2d_{i}/bias"), signed(seed + 1, *f, 0.05)));
        out.push((
            format!("batch_normalization_{i}/gamma"),
            signed(seed + 2, *f, 0.1)
                .into_iter()
                .map(|v| 1.0 + v)
                .collect(),
        ));
        out.push((
            format!("batch_normalization_{i}/beta"),
            signed(seed + 3, *f, 0.1),
        ));
        seed += 4;
        cin = *f;
        side = (side - 2) / 2;
    }
    let flat = side * side * cin;
    for (i, (fan_in, units)) in [(flat, 512usize), (512, 10)].into_iter().enumerate() {
        let limit = (6.0 / (fan_in + units) as f64).sqrt();
        out.push((
            format!("dense_{}/kernel", i + 1),
            signed(seed, fan_in * units, limit),
        ));
        out.push((
            format!("dense_{}/bias", i + 1),
            signed(seed + 1, units, 0.05),
        ));
        seed += 2;
    }
    out
}

fn sampled(values: &[f32], samples: usize) -> Vec<f32> {
    if values.len() <= samples {
        return values.to_vec();
    }
    (0..samples)
        .map(|k| values[k * values.len() / samples])
        .collect()
}

/// max |ours − theirs| / scale, the tensor-wise relative error.
pub(crate) fn rel_error(ours: &[f32], theirs: &[f32], scale: f64) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max)
        / scale.max(1e-30)
}

#[test]
fn bigger_cnn_matches_pytorch_forward_gradients_and_three_adam_steps() {
    let bytes =
        std::fs::read("tests/fixtures/engine/torch_bigcnn.safetensors").expect("fixture present");
    let (fixture, metadata) = gpl::nn::io::from_bytes(&bytes).expect("fixture parses");
    let reference: serde_json::Value =
        serde_json::from_str(&metadata["reference"]).expect("metadata json");
    let samples = reference["samples"].as_u64().unwrap() as usize;
    let labels: Vec<u32> = reference["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let weights: Vec<f32> = reference["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let lr = reference["lr"].as_f64().unwrap() as f32;
    let losses: Vec<f64> = reference["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();

    let mut net = Network::new(&model(), 0, OptimizerConfig::adam()).expect("network builds");
    let params = initial_params();
    for (name, values) in &params {
        net.set_param(name, values).expect("parameter exists");
    }
    let images = det(1000, N * SIDE * SIDE * 3);
    let batch = Batch::classes(&images, &labels, &weights);

    let mut report = Vec::new();
    for (step, want_loss) in losses.iter().enumerate() {
        let stats = net.compute_gradients(&batch).expect("step runs");
        let err = (stats.loss - want_loss).abs() / want_loss.abs();
        report.push(format!("loss step {}: {err:.2e}", step + 1));
        assert!(
            err < 1e-4,
            "loss at step {}: {} vs {want_loss}",
            step + 1,
            stats.loss
        );
        if step == 0 {
            let logits = net.train_outputs(N).expect("train workspace exists");
            let want = &fixture["logits"].data;
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
            let err = rel_error(&logits, want, scale);
            report.push(format!("logits: {err:.2e}"));
            assert!(err < 1e-4, "logits: {err}");
            for (name, _) in &params {
                let grad = net.gradient(name).expect("trainable");
                let scale = reference[format!("grad_maxabs/{name}")].as_f64().unwrap();
                let err = rel_error(
                    &sampled(&grad, samples),
                    &fixture[&format!("grad/{name}")].data,
                    scale,
                );
                report.push(format!("grad {name}: {err:.2e}"));
                assert!(err < 1e-4, "gradient of {name}: relative error {err}");
            }
        }
        net.apply_gradients(lr);
    }
    let state = net.named_state();
    let mut worst_after = 0.0f64;
    for (name, _) in &params {
        let scale = reference[format!("after_maxabs/{name}")].as_f64().unwrap();
        let err = rel_error(
            &sampled(&state[name].data, samples),
            &fixture[&format!("after/{name}")].data,
            scale,
        );
        report.push(format!("after 3 steps {name}: {err:.2e}"));
        worst_after = worst_after.max(err);
    }
    for i in 1..=4 {
        for stat in ["moving_mean", "moving_variance"] {
            let name = format!("batch_normalization_{i}/{stat}");
            let want = &fixture[&format!("after/{name}")].data;
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
            let err = rel_error(&state[&name].data, want, scale);
            report.push(format!("{name}: {err:.2e}"));
            assert!(err < 1e-4, "{name}: relative error {err}");
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        worst_after < 1e-4,
        "parameters after three Adam steps: worst relative error {worst_after}"
    );
}

/// The branching model of make_torch_graph_fixture.py.
pub(crate) fn graph_model() -> ModelIr {
    let conv = |filters, k: usize, activation| LayerOp::Conv2d {
        filters,
        kernel: [k, k],
        stride: [1, 1],
        padding: Padding::Same,
        dilation: [1, 1],
        groups: 1,
        activation,
        regularizer: Regularizer::default(),
    };
    let dense = |units| LayerOp::Dense {
        units,
        activation: Activation::Softmax,
        regularizer: Regularizer::default(),
    };
    let spec = |name: &str, op, from: &[&str]| LayerSpec {
        name: Some(name.into()),
        op,
        from: from.iter().map(|s| s.to_string()).collect(),
        share: None,
    };
    ModelIr::build_graph(
        "branching",
        vec![10, 10, 3],
        vec![
            spec("stem", conv(8, 3, Activation::Relu), &[]),
            spec("left", conv(8, 3, Activation::Relu), &[]),
            spec("right", conv(8, 1, Activation::Linear), &["stem"]),
            spec("sum", LayerOp::Add, &["left", "right"]),
            spec("cat", LayerOp::Concat, &["sum", "stem"]),
            spec(
                "pool",
                LayerOp::MaxPool {
                    size: [2, 2],
                    stride: [2, 2],
                    padding: Padding::Valid,
                },
                &[],
            ),
            spec("flat", LayerOp::Flatten, &[]),
            spec("main", dense(10), &[]),
            spec("aux_pool", LayerOp::GlobalAvgPool, &["sum"]),
            spec("aux", dense(3), &[]),
        ],
        vec!["main".into(), "aux".into()],
    )
    .expect("valid graph")
}

/// make_torch_graph_fixture.py's `initial_params`: same order, seeds 1, 2, 3, ... two per layer.
pub(crate) fn graph_initial_params() -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for (i, (name, len, units, fan_in, fan_out)) in [
        ("stem", 3 * 3 * 3 * 8, 8, 27, 72),
        ("left", 3 * 3 * 8 * 8, 8, 72, 72),
        ("right", 8 * 8, 8, 8, 8),
        ("main", 400 * 10, 10, 400, 10),
        ("aux", 8 * 3, 3, 8, 3),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 1 + 2 * i as u64;
        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
        out.push((format!("{name}/kernel"), signed(seed, len, limit)));
        out.push((format!("{name}/bias"), signed(seed + 1, units, 0.05)));
    }
    out
}

fn json_u32(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn branching_model_matches_pytorch_forward_gradients_and_three_adam_steps() {
    let bytes =
        std::fs::read("tests/fixtures/engine/torch_graph.safetensors").expect("fixture present");
    let (fixture, metadata) = gpl::nn::io::from_bytes(&bytes).expect("fixture parses");
    let reference: serde_json::Value =
        serde_json::from_str(&metadata["reference"]).expect("metadata json");
    let labels_main = json_u32(&reference["labels_main"]);
    let labels_aux = json_u32(&reference["labels_aux"]);
    let weights: Vec<f32> = reference["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let smoothing = reference["label_smoothing"].as_f64().unwrap() as f32;
    let lr = reference["lr"].as_f64().unwrap() as f32;
    let losses: Vec<f64> = reference["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();

    let ir = graph_model();
    let mut net = Network::new(&ir, 0, OptimizerConfig::adam()).expect("network builds");
    let mut names = Vec::new();
    for (name, values) in graph_initial_params() {
        net.set_param(&name, &values).unwrap();
        names.push(name);
    }
    let images = det(2000, 4 * 10 * 10 * 3);
    let batch = Batch {
        images: &images,
        targets: vec![
            Target::Classes {
                labels: &labels_main,
                label_smoothing: smoothing,
            },
            Target::Classes {
                labels: &labels_aux,
                label_smoothing: 0.0,
            },
        ],
        weights: &weights,
    };
    let mut report = Vec::new();
    for (step, want_loss) in losses.iter().enumerate() {
        let stats = net.compute_gradients(&batch).expect("step runs");
        let err = (stats.loss - want_loss).abs() / want_loss.abs();
        report.push(format!("loss step {}: {err:.2e}", step + 1));
        assert!(
            err < 1e-4,
            "loss at step {}: {} vs {want_loss}",
            step + 1,
            stats.loss
        );
        if step == 0 {
            for (k, output) in ["main", "aux"].into_iter().enumerate() {
                let logits = net.train_output(4, k).expect("train workspace exists");
                let want = &fixture[&format!("logits/{output}")].data;
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
                let err = rel_error(&logits, want, scale);
                report.push(format!("logits {output}: {err:.2e}"));
                assert!(err < 1e-4, "logits of {output}: {err}");
            }
            for name in &names {
                let grad = net.gradient(name).expect("trainable");
                let scale = reference[format!("grad_maxabs/{name}")].as_f64().unwrap();
                let err = rel_error(&grad, &fixture[&format!("grad/{name}")].data, scale);
                report.push(format!("grad {name}: {err:.2e}"));
                assert!(err < 1e-4, "gradient of {name}: relative error {err}");
            }
        }
        net.apply_gradients(lr);
    }
    let state = net.named_state();
    for name in &names {
        let scale = reference[format!("after_maxabs/{name}")].as_f64().unwrap();
        let err = rel_error(
            &state[name].data,
            &fixture[&format!("after/{name}")].data,
            scale,
        );
        report.push(format!("after 3 steps {name}: {err:.2e}"));
        assert!(
            err < 1e-4,
            "{name} after three Adam steps: relative error {err}"
        );
    }
    println!("{}", report.join("\n"));
}
