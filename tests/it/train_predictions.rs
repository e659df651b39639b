//! predictions.csv from a trained learner: one row per validation and test sample, read back exactly.

use gpl::data::ImageSet;
use gpl::nn::learner::Learner;
use gpl::train::predictions::*;
use gpl::train::testing::SoftmaxRegression;

fn set(n: usize, offset: u8) -> ImageSet {
    ImageSet {
        height: 2,
        width: 2,
        channels: 1,
        images: (0..n * 4)
            .map(|i| (i as u8).wrapping_mul(37).wrapping_add(offset))
            .collect(),
        labels: (0..n as u32).map(|i| i % 3).collect(),
        class_names: vec!["a".into(), "b".into(), "c".into()],
    }
}

#[test]
fn predictions_csv_has_one_exact_row_per_sample_and_split() {
    let mut learner = SoftmaxRegression::new(4, 3);
    let (val, test) = (set(5, 0), set(4, 9));
    let val_probs = predict_set(&mut learner, &val, 2).unwrap();
    let test_probs = predict_set(&mut learner, &test, 3).unwrap();
    // Batching does not change what is predicted.
    assert_eq!(val_probs, predict_set(&mut learner, &val, 64).unwrap());
    let mut rows = prediction_rows("val", &val.labels, &val_probs, learner.classes());
    rows.extend(prediction_rows(
        "test",
        &test.labels,
        &test_probs,
        learner.classes(),
    ));
    assert_eq!(rows.len(), 9);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("predictions.csv");
    write_predictions_csv(&path, &rows).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("split,index,true,p0,p1,p2"));
    assert!(lines.next().unwrap().starts_with("val,0,0,"));
    assert!(text.lines().nth(6).unwrap().starts_with("test,0,0,"));
    assert_eq!(read_predictions_csv(&path).unwrap(), rows);
    for row in &rows {
        let sum: f32 = row.probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
    }
}

#[test]
fn ragged_rows_and_bad_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("predictions.csv");
    let rows = vec![
        PredictionRow {
            split: "val".into(),
            index: 0,
            truth: 1,
            probabilities: vec![0.5, 0.5],
        },
        PredictionRow {
            split: "val".into(),
            index: 1,
            truth: 0,
            probabilities: vec![1.0],
        },
    ];
    assert!(write_predictions_csv(&path, &rows).is_err());
    assert!(!path.exists(), "nothing is written on error");
    std::fs::write(&path, "split,index,true,p0\nval,0,0,zero\n").unwrap();
    let err = read_predictions_csv(&path).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}
