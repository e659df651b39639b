//! Splits, folds, class weights and rebalancing against scikit-learn (fixtures from
//! tests/fixtures/data/make_sklearn.py), and the guarantee that no held-out sample reaches
//! training.

use gpl::data::augment::AugmentSpec;
use gpl::data::balance::{
    balance, balanced_weights, materialize, BalanceSpec, Resample, WeightsSpec,
};
use gpl::data::split::{class_counts, holdout, kfold, kfold_allocation, HoldoutSpec};
use gpl::data::synth::{synthesize, SynthConfig};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;

fn reference() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data/sklearn_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn balanced_weights_equal_sklearn() {
    for case in reference()["cases"].as_array().unwrap() {
        let labels: Vec<u32> = serde_json::from_value(case["labels"].clone()).unwrap();
        let expected: Vec<f64> = serde_json::from_value(case["balanced_weights"].clone()).unwrap();
        let classes = expected.len();
        let counts = class_counts(&labels, &(0..labels.len()).collect::<Vec<_>>(), classes);
        let ours = balanced_weights(&counts);
        for (a, b) in ours.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-12, "{ours:?} vs {expected:?}");
        }
    }
}

#[test]
fn kfold_sizes_per_class_equal_sklearn_stratified_kfold() {
    for case in reference()["cases"].as_array().unwrap() {
        let labels: Vec<u32> = serde_json::from_value(case["labels"].clone()).unwrap();
        for f in case["folds"].as_array().unwrap() {
            let Some(expected) = f["test_class_counts"].as_array() else {
                continue;
            };
            let k = f["k"].as_u64().unwrap() as usize;
            let mut expected: Vec<Vec<usize>> = expected
                .iter()
                .map(|v| serde_json::from_value(v.clone()).unwrap())
                .collect();
            let folds = kfold(&labels, k, 11).unwrap();
            let classes = expected[0].len();
            let mut ours: Vec<Vec<usize>> = folds
                .iter()
                .map(|fold| class_counts(&labels, &fold.test, classes))
                .collect();
            // Same multiset of per-fold class counts (fold order is a shuffle detail).
            ours.sort();
            expected.sort();
            assert_eq!(ours, expected, "k = {k}");
            let mut alloc = kfold_allocation(&labels, k);
            alloc.sort();
            assert_eq!(alloc, expected);
        }
    }
}

#[test]
fn no_validation_or_test_sample_reaches_training() {
    let set = synthesize(&SynthConfig {
        proportions: Some(vec![10.0, 30.0, 25.0, 3.0, 6.0, 1.0, 3.0, 5.0, 4.0, 3.0]),
        ..SynthConfig::galaxy10(300, 2)
    })
    .unwrap();
    let split = holdout(
        &set.labels,
        &HoldoutSpec {
            train: 0.7,
            val: 0.15,
            test: 0.15,
            stratify: true,
            seed: 42,
        },
    )
    .unwrap();
    let spec = BalanceSpec {
        downsample: vec![Resample {
            classes: vec![1, 2],
            to: 40,
        }],
        oversample: vec![Resample {
            classes: vec![3, 4, 6, 7, 8, 9],
            to: 30,
        }],
        augment: AugmentSpec {
            rotation_range: 180.0,
            zoom_range: AugmentSpec::zoom(0.1),
            horizontal_flip: true,
            ..Default::default()
        },
        weights: WeightsSpec::Balanced,
        seed: 9,
    };
    let b = balance(&set.labels, 10, &split.train, &spec).unwrap();
    let train: HashSet<usize> = split.train.iter().copied().collect();
    let held_out: HashSet<usize> = split.val.iter().chain(&split.test).copied().collect();
    assert!(b
        .entries
        .iter()
        .all(|e| train.contains(&(e.index as usize)) && !held_out.contains(&(e.index as usize))));
    // Every augmented copy's pixels differ from its source but derive from a training image.
    let materialized = materialize(&set, &b);
    assert_eq!(materialized.len(), b.entries.len());
    assert_eq!(b.counts_after[3], 30);
    assert_eq!(b.counts_after[1], 40);
    let first_copy = b
        .entries
        .iter()
        .position(|e| e.augment_seed.is_some())
        .unwrap();
    assert_ne!(
        materialized.image(first_copy),
        set.image(b.entries[first_copy].index as usize)
    );
    // The index serialises compactly: no pixels in it.
    let json = serde_json::to_string(&b).unwrap();
    assert!(
        json.len() < 40 * b.entries.len() + 2000,
        "{} bytes",
        json.len()
    );
}
