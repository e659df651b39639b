//! Weight files: safetensors round trips, Keras HDF5 import in both layouts (fixture made by
//! tests/fixtures/train/make_keras_h5.py), shape checks, and freezing.

use gpl::nn::ir::{Activation, LayerOp, ModelIr, Padding, Regularizer};
use gpl::nn::learner::{NamedTensors, Tensor};
use gpl::train::weights::*;
use gpl::train::TrainError;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/train")
        .join(name)
}

fn forward_fixture() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("keras_forward.json")).unwrap()).unwrap()
}

fn expected_shapes() -> ExpectedShapes {
    let json = forward_fixture();
    json["shapes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn safetensors_round_trip_is_exact_and_deterministic() {
    let tensors = NamedTensors::from([
        (
            "b/bias".to_string(),
            Tensor {
                shape: vec![3],
                data: vec![1.5, -0.0, f32::MIN_POSITIVE],
            },
        ),
        (
            "a/kernel".to_string(),
            Tensor {
                shape: vec![2, 2],
                data: vec![0.1, 0.2, 0.3, 1e-30],
            },
        ),
    ]);
    let metadata = Metadata::from([
        ("z".to_string(), "last".to_string()),
        ("epoch".to_string(), "3".to_string()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    save_safetensors(&path, &tensors, &metadata).unwrap();
    let (back, meta) = load_safetensors(&path).unwrap();
    assert_eq!(back, tensors);
    assert_eq!(meta, metadata);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        to_safetensors_bytes(&tensors, &metadata)
    );
    // The safetensors crate reads our bytes and sees the layout it would have written.
    let bytes = std::fs::read(&path).unwrap();
    let parsed = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(parsed.tensor("a/kernel").unwrap().shape(), &[2, 2]);
    let crate_bytes = safetensors::serialize(
        tensors
            .iter()
            .map(|(k, t)| {
                let raw: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (k.clone(), raw, t.shape.clone())
            })
            .collect::<Vec<_>>()
            .iter()
            .map(|(k, raw, shape)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(
                        safetensors::Dtype::F32,
                        shape.clone(),
                        raw,
                    )
                    .unwrap(),
                )
            }),
        &None,
    )
    .unwrap();
    assert_eq!(
        to_safetensors_bytes(&tensors, &Metadata::new()),
        crate_bytes,
        "same bytes as the crate without metadata"
    );
}

#[test]
fn truncated_safetensors_is_an_error() {
    let bytes = to_safetensors_bytes(
        &NamedTensors::from([(
            "x".into(),
            Tensor {
                shape: vec![4],
                data: vec![1.0; 4],
            },
        )]),
        &Metadata::new(),
    );
    let err = from_safetensors_bytes(
        &bytes[..bytes.len() - 3],
        std::path::Path::new("w.safetensors"),
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::BadSafetensors { .. }), "{err:?}");
}

#[test]
fn keras2_and_keras3_layouts_import_to_the_same_named_tensors() {
    let shapes = expected_shapes();
    let k2 = load_keras_h5(&fixture("keras2_weights.h5"), &shapes).unwrap();
    let k3 = load_keras_h5(&fixture("keras3.weights.h5"), &shapes).unwrap();
    assert_eq!(
        k2.keys().collect::<Vec<_>>(),
        vec![
            "block1_conv1/bias",
            "block1_conv1/kernel",
            "block1_conv2/bias",
            "block1_conv2/kernel",
            "predictions/bias",
            "predictions/kernel",
        ]
    );
    assert_eq!(k2, k3);
    assert_eq!(k2["block1_conv2/kernel"].shape, vec![3, 3, 4, 4]);
    // Everything in the file, without the shape check, has the same six tensors.
    assert_eq!(read_keras_h5(&fixture("keras2_weights.h5")).unwrap(), k2);
}

#[test]
fn a_shape_mismatch_names_the_layer() {
    let mut shapes = expected_shapes();
    shapes.insert("block1_conv2/kernel".into(), vec![3, 3, 4, 8]);
    let err = load_keras_h5(&fixture("keras2_weights.h5"), &shapes).unwrap_err();
    match &err {
        TrainError::WeightShapeMismatch {
            layer,
            expected,
            found,
            ..
        } => {
            assert_eq!(layer, "block1_conv2");
            assert_eq!(expected, &vec![3, 3, 4, 8]);
            assert_eq!(found, &vec![3, 3, 4, 4]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("block1_conv2/kernel"), "{err}");
}

#[test]
fn a_missing_layer_is_named() {
    let mut shapes = expected_shapes();
    shapes.insert("block2_conv1/kernel".into(), vec![3, 3, 4, 8]);
    let err = load_keras_h5(&fixture("keras3.weights.h5"), &shapes).unwrap_err();
    assert!(
        matches!(&err, TrainError::MissingLayerWeights { layer, available, .. }
        if layer == "block2_conv1" && available.contains("block1_conv1")),
        "{err:?}"
    );
}

#[test]
fn a_file_that_is_not_keras_weights_is_an_error() {
    let err = read_keras_h5(&fixture("callback_cases.json")).unwrap_err();
    assert!(matches!(err, TrainError::BadKerasWeights { .. }), "{err:?}");
}

/// A plain reference forward pass (valid 3x3 convs with relu, 2x2 max-pool, HWC flatten,
/// dense, softmax) over the imported tensors: if the import mixed up kernel axes or the
/// layer mapping, PyTorch's probabilities would not come out.
fn reference_forward(w: &NamedTensors, image: &[f32]) -> Vec<f32> {
    fn conv(
        x: &[f32],
        [h, wd, c]: [usize; 3],
        kernel: &Tensor,
        bias: &Tensor,
    ) -> (Vec<f32>, [usize; 3]) {
        let (kh, kw, f) = (kernel.shape[0], kernel.shape[1], kernel.shape[3]);
        let (oh, ow) = (h - kh + 1, wd - kw + 1);
        let mut out = vec![0.0; oh * ow * f];
        for y in 0..oh {
            for xx in 0..ow {
                for o in 0..f {
                    let mut s = bias.data[o];
                    for dy in 0..kh {
                        for dx in 0..kw {
                            for i in 0..c {
                                s += x[((y + dy) * wd + xx + dx) * c + i]
                                    * kernel.data[((dy * kw + dx) * c + i) * f + o];
                            }
                        }
                    }
                    out[(y * ow + xx) * f + o] = s.max(0.0);
                }
            }
        }
        (out, [oh, ow, f])
    }
    let (x, s) = conv(
        image,
        [8, 8, 3],
        &w["block1_conv1/kernel"],
        &w["block1_conv1/bias"],
    );
    let (x, [h, wd, c]) = conv(&x, s, &w["block1_conv2/kernel"], &w["block1_conv2/bias"]);
    let mut pooled = Vec::new();
    for y in 0..h / 2 {
        for xx in 0..wd / 2 {
            for i in 0..c {
                let at = |dy: usize, dx: usize| x[((2 * y + dy) * wd + 2 * xx + dx) * c + i];
                pooled.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
            }
        }
    }
    let (k, b) = (&w["predictions/kernel"], &w["predictions/bias"]);
    let units = k.shape[1];
    let logits: Vec<f32> = (0..units)
        .map(|u| {
            b.data[u]
                + pooled
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * k.data[i * units + u])
                    .sum::<f32>()
        })
        .collect();
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

#[test]
fn imported_weights_reproduce_pytorch_probabilities() {
    let weights = load_keras_h5(&fixture("keras2_weights.h5"), &expected_shapes()).unwrap();
    let json = forward_fixture();
    for (image, want) in json["images"]
        .as_array()
        .unwrap()
        .iter()
        .zip(json["probabilities"].as_array().unwrap())
    {
        let image: Vec<f32> = image
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got = reference_forward(&weights, &image);
        for (g, w) in got.iter().zip(want.as_array().unwrap()) {
            assert!(
                (*g as f64 - w.as_f64().unwrap()).abs() < 1e-5,
                "{got:?} vs {want}"
            );
        }
    }
}

fn vgg_like() -> ModelIr {
    let conv = |filters| LayerOp::Conv2d {
        filters,
        kernel: [3, 3],
        stride: [1, 1],
        padding: Padding::Valid,
        dilation: [1, 1],
        groups: 1,
        activation: Activation::Relu,
        regularizer: Regularizer::default(),
    };
    let ops = vec![
        (Some("block1_conv1".to_string()), conv(4)),
        (Some("block1_conv2".to_string()), conv(4)),
        (
            Some("block1_pool".to_string()),
            LayerOp::MaxPool {
                size: [2, 2],
                stride: [2, 2],
                padding: Padding::Valid,
            },
        ),
        (Some("flatten".to_string()), LayerOp::Flatten),
        (
            Some("predictions".to_string()),
            LayerOp::Dense {
                units: 3,
                activation: Activation::Softmax,
                regularizer: Regularizer::default(),
            },
        ),
    ];
    ModelIr::build("vgg_like", vec![8, 8, 3], ops).unwrap()
}

#[test]
fn freeze_until_and_trainable_from_set_layer_flags() {
    let mut model = vgg_like();
    apply_freeze(&mut model, &Freeze::Until("block1_conv2".into())).unwrap();
    let flags: Vec<bool> = model.layers.iter().map(|l| l.trainable).collect();
    assert_eq!(flags, vec![false, false, true, true, true]);
    assert_eq!(model.trainable_params(), 16 * 3 + 3);

    apply_freeze(&mut model, &Freeze::TrainableFrom("block1_conv2".into())).unwrap();
    let flags: Vec<bool> = model.layers.iter().map(|l| l.trainable).collect();
    assert_eq!(flags, vec![false, true, true, true, true]);

    let err = apply_freeze(&mut model, &Freeze::Until("block9_conv1".into())).unwrap_err();
    assert!(
        matches!(&err, TrainError::UnknownLayer { layer, available, .. } if layer == "block9_conv1" && available.contains("block1_pool")),
        "{err:?}"
    );
}
