//! Transfer learning through the engine: Keras-layout HDF5 weights loaded into a `Network`
//! reproduce the fixture script's PyTorch forward pass, and the frozen-prefix learner trains
//! exactly like the whole network with the same layers frozen.

use gpl::nn::frozen::FrozenPrefix;
use gpl::nn::ir::{Activation, LayerOp, ModelIr, Padding, Regularizer};
use gpl::nn::learner::{Batch, Learner};
use gpl::nn::{Network, OptimizerConfig};
use gpl::train::weights::{load_keras_h5, ExpectedShapes};
use std::path::Path;

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

fn dense(units: usize, activation: Activation) -> LayerOp {
    LayerOp::Dense {
        units,
        activation,
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

#[test]
fn keras_h5_weights_reproduce_the_reference_forward_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("keras_forward.json")).unwrap())
            .unwrap();
    let ir = ModelIr::build(
        "vgg_like",
        vec![8, 8, 3],
        vec![
            (Some("block1_conv1".into()), conv(4)),
            (Some("block1_conv2".into()), conv(4)),
            (Some("block1_pool".into()), pool()),
            (Some("flatten".into()), LayerOp::Flatten),
            (Some("predictions".into()), dense(3, Activation::Softmax)),
        ],
    )
    .unwrap();
    let mut network = Network::new(&ir, 0, OptimizerConfig::adam()).unwrap();
    let expected: ExpectedShapes = serde_json::from_value(fixture["shapes"].clone()).unwrap();
    for file in ["keras2_weights.h5", "keras3.weights.h5"] {
        let weights = load_keras_h5(&dir.join(file), &expected).unwrap();
        network.load_weights(&weights).unwrap();
        let images: Vec<f32> = fixture["images"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect();
        let probs = network.predict(&images, 4).unwrap();
        let want: Vec<f64> = fixture["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        for (got, want) in probs.iter().zip(&want) {
            assert!((*got as f64 - want).abs() < 1e-5, "{file}: {got} vs {want}");
        }
    }
}

#[test]
fn frozen_prefix_trains_like_the_network_with_frozen_layers() {
    let mut ir = ModelIr::build(
        "ft",
        vec![10, 10, 2],
        vec![
            (None, conv(3)),
            (None, pool()),
            (None, LayerOp::Flatten),
            (None, dense(8, Activation::Relu)),
            (None, dense(3, Activation::Softmax)),
        ],
    )
    .unwrap();
    ir.layers[0].trainable = false;
    ir.layers[1].trainable = false;
    let at = FrozenPrefix::split_point(&ir).unwrap();
    assert_eq!(at, 2);
    let mut whole = Network::new(&ir, 5, OptimizerConfig::adam()).unwrap();
    let mut split = FrozenPrefix::new(&ir, at, 5, OptimizerConfig::adam()).unwrap();
    let weights = whole
        .state()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("optimizer/"))
        .collect();
    split.load_weights(&weights).unwrap();

    let n = 6;
    let images: Vec<f32> = (0..n * 200)
        .map(|i| ((i * 37 % 101) as f32) / 101.0)
        .collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    let sample_weights = vec![1.0f32; n];
    for _ in 0..4 {
        let batch = Batch::classes(&images, &labels, &sample_weights);
        let a = whole.train_batch(&batch, 1e-2).unwrap();
        let b = split.train_batch(&batch, 1e-2).unwrap();
        assert!(
            (a.loss - b.loss).abs() < 1e-6,
            "loss {} vs {}",
            a.loss,
            b.loss
        );
    }
    let (pa, pb) = (
        whole.predict(&images, n).unwrap(),
        split.predict(&images, n).unwrap(),
    );
    for (a, b) in pa.iter().zip(&pb) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    // Resume state round-trips through the split learner.
    let state = split.state();
    let mut again = FrozenPrefix::new(&ir, at, 99, OptimizerConfig::adam()).unwrap();
    again.load_state(&state).unwrap();
    assert_eq!(again.predict(&images, n).unwrap(), pb);
}

#[test]
fn learners_with_the_same_frozen_base_share_its_features() {
    // A prefix unique to this test, so other tests in the process cannot have filled its map.
    let mut ir = ModelIr::build(
        "shared_base",
        vec![9, 7, 2],
        vec![
            (None, conv(3)),
            (None, LayerOp::Flatten),
            (None, dense(3, Activation::Softmax)),
        ],
    )
    .unwrap();
    ir.layers[0].trainable = false;
    let at = FrozenPrefix::split_point(&ir).unwrap();
    let n = 5;
    let images: Vec<f32> = (0..n * 126)
        .map(|i| ((i * 53 % 97) as f32) / 97.0)
        .collect();

    let mut first = FrozenPrefix::new(&ir, at, 21, OptimizerConfig::adam()).unwrap();
    let a = first.predict(&images, n).unwrap();
    assert_eq!(first.prefix_images_computed(), n);
    // Same layers, same seed: the same base weights, so nothing is recomputed.
    let mut second = FrozenPrefix::new(&ir, at, 21, OptimizerConfig::adam()).unwrap();
    let b = second.predict(&images, n).unwrap();
    assert_eq!(second.prefix_images_computed(), 0);
    assert_eq!(a, b);
    // Other base weights must not reuse those features.
    let mut other = FrozenPrefix::new(&ir, at, 22, OptimizerConfig::adam()).unwrap();
    other.predict(&images, n).unwrap();
    assert_eq!(other.prefix_images_computed(), n);
}
