//! Attribution maps against PyTorch in float64 (tests/fixtures/engine/
//! make_torch_explain_fixture.py): Grad-CAM, Grad-CAM++, saliency and integrated gradients of
//! the report's bigger CNN (inference mode, batchnorm running statistics) at its last conv
//! layer, and of the branching model at an add; plus the sanity check's own sanity: a
//! randomised network must change the maps, and a map with no positive evidence is zeros.

use crate::engine_torch::{
    det, graph_initial_params, graph_model, initial_params, model, rel_error, signed,
};
use gpl::explain::sanity::cascade;
use gpl::explain::{attribute, Baseline, Method};
use gpl::nn::ir::ModelIr;
use gpl::nn::{Network, OptimizerConfig};

/// Relative error allowed before normalisation (the bound).
const TOLERANCE: f64 = 1e-4;

fn fixture() -> (gpl::nn::learner::NamedTensors, serde_json::Value) {
    let bytes =
        std::fs::read("tests/fixtures/engine/torch_explain.safetensors").expect("fixture present");
    let (tensors, metadata) = gpl::nn::io::from_bytes(&bytes).expect("fixture parses");
    let reference = serde_json::from_str(&metadata["reference"]).expect("metadata json");
    (tensors, reference)
}

/// The bigger CNN with the fixture's weights and running statistics.
fn big_network() -> Network {
    let mut net = Network::new(&model(), 0, OptimizerConfig::adam()).expect("network builds");
    for (name, values) in initial_params() {
        net.set_param(&name, &values).expect("parameter exists");
    }
    for (i, f) in [32usize, 64, 128, 128].into_iter().enumerate() {
        let i = i as u64 + 1;
        let mean = signed(100 + i, f, 0.1);
        let variance: Vec<f32> = det(200 + i, f).into_iter().map(|v| 1.0 + v / 2.0).collect();
        net.set_param(&format!("batch_normalization_{i}/moving_mean"), &mean)
            .unwrap();
        net.set_param(
            &format!("batch_normalization_{i}/moving_variance"),
            &variance,
        )
        .unwrap();
    }
    net
}

fn branching_network() -> Network {
    let mut net = Network::new(&graph_model(), 0, OptimizerConfig::adam()).unwrap();
    for (name, values) in graph_initial_params() {
        net.set_param(&name, &values).unwrap();
    }
    net
}

fn layer(ir: &ModelIr, name: &str) -> usize {
    ir.layer_index(name).expect("layer exists")
}

fn compare(case: &str, mut net: Network, layer_name: &str, side: usize, seed: u64) {
    let (tensors, reference) = fixture();
    let targets: Vec<u32> = reference["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let steps = reference["ig_steps"].as_u64().unwrap() as usize;
    let images = det(seed, targets.len() * side * side * 3);
    let l = layer(net.ir(), layer_name);
    let methods = [
        ("gradcam", Method::GradCam { layer: l }),
        ("gradcam_pp", Method::GradCamPp { layer: l }),
        ("saliency", Method::Saliency),
        (
            "integrated_gradients",
            Method::IntegratedGradients {
                steps,
                baseline: Baseline::Black,
            },
        ),
    ];
    let logits = net.logits(&images, targets.len()).unwrap();
    let key = format!("{case}/logits");
    let err = rel_error(
        &logits,
        &tensors[&key].data,
        reference[format!("{key}/maxabs")].as_f64().unwrap(),
    );
    assert!(err < TOLERANCE, "{case} logits: relative error {err}");
    for (name, method) in methods {
        let ours = attribute(&mut net, &images, &targets, &method, 0).expect("maps compute");
        let key = format!("{case}/{name}");
        let scale = reference[format!("{key}/maxabs")].as_f64().unwrap();
        assert!(
            scale > 0.0,
            "{key}: the reference map is all zeros, the test would be vacuous"
        );
        let err = rel_error(&ours.raw, &tensors[&key].data, scale);
        println!("{key}: relative error {err:.2e}");
        assert!(err < TOLERANCE, "{key}: relative error {err}");
        assert!(
            ours.maps.iter().all(|v| (0.0..=1.0).contains(v)),
            "{key}: maps in [0, 1]"
        );
    }
}

#[test]
fn bigger_cnn_maps_match_pytorch() {
    compare("big", big_network(), "conv2d_4", 69, 3000);
}

#[test]
fn branching_model_maps_match_pytorch() {
    compare("branching", branching_network(), "sum", 10, 3001);
}

#[test]
fn randomising_the_network_changes_grad_cam_and_restores_the_weights() {
    let mut net = big_network();
    let before: Vec<Vec<f32>> = net.params().iter().map(|p| p.value.clone()).collect();
    let targets = [3u32, 7, 0, 9];
    let images = det(3000, 4 * 69 * 69 * 3);
    let method = Method::GradCam {
        layer: layer(net.ir(), "conv2d_4"),
    };
    let trained = attribute(&mut net, &images, &targets, &method, 0)
        .unwrap()
        .maps;
    let steps = cascade(
        &mut net,
        &images,
        &targets,
        &[method],
        std::slice::from_ref(&trained),
        0,
    )
    .unwrap();
    // One step per layer with parameters: 2 dense, 4 batchnorm, 4 conv.
    assert_eq!(steps[0].len(), 10);
    assert_eq!(steps[0][0].layer, "dense_2");
    let last = steps[0]
        .last()
        .unwrap()
        .spearman
        .expect("maps are not constant");
    assert!(
        last < 0.9,
        "Grad-CAM survived full randomisation: Spearman {last}"
    );
    let after: Vec<Vec<f32>> = net.params().iter().map(|p| p.value.clone()).collect();
    assert_eq!(before, after, "the trained weights are restored");
    let again = attribute(&mut net, &images, &targets, &method, 0)
        .unwrap()
        .maps;
    assert_eq!(trained, again);
}

#[test]
fn grad_cam_with_only_negative_evidence_is_zero_not_nan() {
    use gpl::nn::ir::{Activation, LayerOp, Padding, Regularizer};
    // Positive activations and a class score that every channel lowers: every channel's
    // contribution is negative, the ReLU clips the whole map, and scaling must not divide
    // by its zero range.
    let ir = ModelIr::build(
        "negative",
        vec![4, 4, 1],
        vec![
            (
                None,
                LayerOp::Conv2d {
                    filters: 2,
                    kernel: [1, 1],
                    stride: [1, 1],
                    padding: Padding::Valid,
                    dilation: [1, 1],
                    groups: 1,
                    activation: Activation::Relu,
                    regularizer: Regularizer::default(),
                },
            ),
            (None, LayerOp::Flatten),
            (
                None,
                LayerOp::Dense {
                    units: 2,
                    activation: Activation::Softmax,
                    regularizer: Regularizer::default(),
                },
            ),
        ],
    )
    .unwrap();
    let mut net = Network::new(&ir, 0, OptimizerConfig::adam()).unwrap();
    let names: Vec<(String, usize)> = net
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value.len()))
        .collect();
    for (name, len) in names {
        let value: Vec<f32> = if name.ends_with("kernel") && name.starts_with("dense") {
            // Column 0 (class 0) negative, column 1 positive.
            (0..len)
                .map(|i| if i % 2 == 0 { -0.5 } else { 0.5 })
                .collect()
        } else {
            vec![0.3; len]
        };
        net.set_param(&name, &value).unwrap();
    }
    let images: Vec<f32> = (0..16).map(|i| 0.1 + i as f32 / 20.0).collect();
    for method in [
        Method::GradCam { layer: 0 },
        Method::GradCamPp { layer: 0 },
        Method::LayerCam { layer: 0 },
    ] {
        let out = attribute(&mut net, &images, &[0], &method, 0).unwrap();
        assert!(
            out.raw.iter().all(|v| *v == 0.0),
            "{method:?}: raw {:?}",
            out.raw
        );
        assert!(
            out.maps.iter().all(|v| *v == 0.0),
            "{method:?}: maps {:?}",
            out.maps
        );
    }
    // Class 1, which every channel supports, gets a real map.
    let out = attribute(&mut net, &images, &[1], &Method::GradCam { layer: 0 }, 0).unwrap();
    assert!(out.maps.contains(&1.0));
}
