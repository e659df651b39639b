//! Keras parity of the affine warp (fixtures from tests/fixtures/data/make_augment.py, which
//! runs Keras's matrix construction through scipy.ndimage.affine_transform, order 1).

use gpl::data::augment::{apply_transform, AugmentSpec, FillMode, Transform};
use serde_json::Value;
use std::path::PathBuf;

#[test]
fn affine_warp_matches_keras_scipy_within_one_grey_level() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/augment_parity.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for (n, case) in cases.iter().enumerate() {
        let p = &case["params"];
        let get = |k: &str, d: f64| p.get(k).and_then(Value::as_f64).unwrap_or(d);
        let fill_mode = match p
            .get("fill_mode")
            .and_then(Value::as_str)
            .unwrap_or("nearest")
        {
            "nearest" => FillMode::Nearest,
            "constant" => FillMode::Constant,
            "reflect" => FillMode::Reflect,
            "wrap" => FillMode::Wrap,
            other => panic!("unknown fill mode {other}"),
        };
        let spec = AugmentSpec {
            fill_mode,
            cval: get("cval", 0.0) as f32,
            ..Default::default()
        };
        let t = Transform {
            theta: get("theta", 0.0),
            tx: get("tx", 0.0),
            ty: get("ty", 0.0),
            shear: get("shear", 0.0),
            zx: get("zx", 1.0),
            zy: get("zy", 1.0),
            ..Transform::identity()
        };
        let (h, w, c) = (
            case["height"].as_u64().unwrap() as usize,
            case["width"].as_u64().unwrap() as usize,
            3,
        );
        let input: Vec<u8> = serde_json::from_value(case["input"].clone()).unwrap();
        let expected: Vec<f32> = serde_json::from_value(case["expected"].clone()).unwrap();
        let mut out = vec![0f32; h * w * c];
        apply_transform(&spec, &t, &input, h, w, c, &mut out);
        let close = out
            .iter()
            .zip(&expected)
            .filter(|(a, b)| (*a - *b).abs() <= 1.0)
            .count();
        let fraction = close as f64 / expected.len() as f64;
        let max_err = out
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            fraction >= 0.999,
            "case {n} {p}: {fraction:.5} within 1 grey level (max error {max_err})"
        );
    }
}
