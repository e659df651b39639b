//! The epoch loop on a small real learner: resume after an interruption ends bit-identical
//! to an uninterrupted run; cancellation and a diverging loss keep the last good checkpoint;
//! callbacks act inside the loop as they decide.

use gpl::data::ImageSet;
use gpl::nn::learner::{Batch, Learner, NamedTensors, StepStats};
use gpl::train::callbacks::*;
use gpl::train::fit::*;
use gpl::train::testing::SoftmaxRegression;
use gpl::train::TrainError;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};

/// Three classes of 4x4x1 images: a bright quadrant per class plus noise.
fn image_set(n: usize, seed: u64) -> ImageSet {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut images = Vec::with_capacity(n * 16);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i % 3) as u32;
        for p in 0..16 {
            let bright = (p % 4 < 2) as u32 + 2 * ((p / 4) < 2) as u32 == label;
            let base = if bright { 150.0 } else { 60.0 };
            images.push((base + rng.gen_range(-60.0..60.0f32)).clamp(0.0, 255.0) as u8);
        }
        labels.push(label);
    }
    ImageSet {
        height: 4,
        width: 4,
        channels: 1,
        images,
        labels,
        class_names: vec!["a".into(), "b".into(), "c".into()],
    }
}

/// Flips the image horizontally when the seed says so, and adds seeded jitter.
fn augment(image: &[f32], shape: [usize; 3], seed: u64, out: &mut [f32]) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let flip = rng.gen_bool(0.5);
    let [h, w, _] = shape;
    for y in 0..h {
        for x in 0..w {
            let sx = if flip { w - 1 - x } else { x };
            out[y * w + x] = (image[y * w + sx] + rng.gen_range(-0.02..0.02f32)).clamp(0.0, 1.0);
        }
    }
}

fn config(epochs: usize) -> FitConfig {
    FitConfig {
        epochs,
        batch_size: 7,
        seed: 11,
        shuffle: true,
        learning_rate: 0.05,
        callbacks: vec![
            CallbackSpec::ReduceLrOnPlateau(ReduceLrConfig {
                factor: 0.5,
                patience: 1,
                min_delta: 0.02,
                ..Default::default()
            }),
            CallbackSpec::EarlyStopping(EarlyStoppingConfig {
                patience: 20,
                restore_best_weights: true,
                monitor: "val_accuracy".into(),
                ..Default::default()
            }),
            CallbackSpec::ModelCheckpoint(ModelCheckpointConfig {
                monitor: "val_loss".into(),
                ..Default::default()
            }),
        ],
        label_smoothing: 0.0,
    }
}

fn bits(state: &NamedTensors) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    state
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.shape.clone(),
                t.data.iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

fn without_seconds(outcome: &FitOutcome) -> FitOutcome {
    let mut o = outcome.clone();
    for r in &mut o.history.epochs {
        r.seconds = 0.0;
    }
    o
}

struct Run {
    outcome: FitOutcome,
    state: NamedTensors,
}

fn run_full(epochs: usize, dir: Option<&std::path::Path>, prefetch: usize) -> Run {
    let train = image_set(45, 1);
    let val = image_set(20, 2);
    let weights = [1.0, 2.0, 0.5];
    let data = TrainData {
        images: &train,
        class_weights: Some(&weights),
        augment: Some(&augment),
        detection: None,
    };
    let mut learner = SoftmaxRegression::new(16, 3);
    let ctx = FitContext {
        checkpoint_dir: dir,
        prefetch_batches: prefetch,
        ..Default::default()
    };
    let outcome =
        fit(&mut learner, &config(epochs), &data, Some(&val), ctx).expect("training runs");
    Run {
        outcome,
        state: learner.state(),
    }
}

/// Cancels right after epoch `k`'s checkpoint is written, then resumes with a fresh learner.
fn run_interrupted(epochs: usize, k: usize, dir: &std::path::Path) -> Run {
    let train = image_set(45, 1);
    let val = image_set(20, 2);
    let weights = [1.0, 2.0, 0.5];
    let data = TrainData {
        images: &train,
        class_weights: Some(&weights),
        augment: Some(&augment),
        detection: None,
    };
    let cancel = AtomicBool::new(false);
    let mut on_progress = |p: EpochProgress| {
        if let EpochProgress::Epoch(record) = p {
            if record.epoch == k {
                cancel.store(true, Ordering::Relaxed);
            }
        }
    };
    let mut learner = SoftmaxRegression::new(16, 3);
    let ctx = FitContext {
        checkpoint_dir: Some(dir),
        cancel: Some(&cancel),
        progress: Some(&mut on_progress),
        prefetch_batches: 2,
    };
    let err = fit(&mut learner, &config(epochs), &data, Some(&val), ctx).expect_err("cancelled");
    assert!(
        matches!(err, TrainError::Cancelled { epoch } if epoch == k + 1),
        "{err:?}"
    );

    let mut resumed_from = None;
    let mut on_progress = |p: EpochProgress| {
        if let EpochProgress::Resumed { completed_epochs } = p {
            resumed_from = Some(completed_epochs);
        }
    };
    // A fresh learner: everything must come from the checkpoint.
    let mut learner = SoftmaxRegression::new(16, 3);
    let ctx = FitContext {
        checkpoint_dir: Some(dir),
        progress: Some(&mut on_progress),
        ..Default::default()
    };
    let outcome =
        fit(&mut learner, &config(epochs), &data, Some(&val), ctx).expect("resumed training runs");
    assert_eq!(resumed_from, Some(k));
    Run {
        outcome,
        state: learner.state(),
    }
}

#[test]
fn resumed_training_is_bit_identical_to_an_uninterrupted_run() {
    let epochs = 9;
    let reference = run_full(epochs, None, 2);
    // The run exercised the callbacks: the rate was reduced and best weights were restored.
    let lrs: Vec<f32> = reference
        .outcome
        .history
        .epochs
        .iter()
        .map(|r| r.lr)
        .collect();
    assert!(
        lrs.windows(2).any(|w| w[1] < w[0]),
        "no reduction in {lrs:?}"
    );
    assert!(reference.outcome.restored_from.is_some());
    assert!(reference.outcome.checkpoint_model.is_some());
    let losses: Vec<f64> = reference
        .outcome
        .history
        .epochs
        .iter()
        .map(|r| r.loss)
        .collect();
    assert!(
        losses[epochs - 1] < losses[0],
        "the learner did not learn: {losses:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let checkpointed = run_full(epochs, Some(dir.path()), 1);
    assert_eq!(
        bits(&checkpointed.state),
        bits(&reference.state),
        "checkpointing changed the result"
    );
    assert_eq!(
        without_seconds(&checkpointed.outcome),
        without_seconds(&reference.outcome)
    );

    for k in [1, 4, 8] {
        let dir = tempfile::tempdir().unwrap();
        let resumed = run_interrupted(epochs, k, dir.path());
        assert_eq!(
            bits(&resumed.state),
            bits(&reference.state),
            "interrupted after epoch {k}"
        );
        assert_eq!(
            without_seconds(&resumed.outcome),
            without_seconds(&reference.outcome),
            "after epoch {k}"
        );
    }
}

#[test]
fn a_finished_checkpoint_resumes_to_the_same_end() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_full(4, Some(dir.path()), 2);
    let again = run_full(4, Some(dir.path()), 2);
    assert_eq!(bits(&again.state), bits(&first.state));
    assert_eq!(
        again.outcome, first.outcome,
        "a finished run is not re-trained"
    );
    // Only the last state and the ones callbacks hold stay on disk.
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.contains(&"loop.json".to_string())
            && files.contains(&"epoch-0004.safetensors".to_string()),
        "{files:?}"
    );
    assert!(files.iter().all(|f| !f.contains(".tmp")), "{files:?}");
    assert!(files.len() <= 4, "{files:?}");
}

#[test]
fn a_checkpoint_from_another_setup_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    run_full(2, Some(dir.path()), 2);
    let train = image_set(45, 1);
    let data = TrainData {
        images: &train,
        class_weights: None,
        augment: None,
        detection: None,
    };
    let mut learner = SoftmaxRegression::new(16, 3);
    let ctx = FitContext {
        checkpoint_dir: Some(dir.path()),
        ..Default::default()
    };
    let err = fit(
        &mut learner,
        &FitConfig {
            epochs: 2,
            ..Default::default()
        },
        &data,
        None,
        ctx,
    )
    .unwrap_err();
    assert!(
        matches!(err, TrainError::CheckpointMismatch { .. }),
        "{err:?}"
    );
}

/// Returns a NaN loss from its `nan_at`-th step on, like a diverging network.
struct Diverging {
    inner: SoftmaxRegression,
    steps: usize,
    nan_at: usize,
}

impl Learner for Diverging {
    fn classes(&self) -> usize {
        self.inner.classes()
    }
    fn train_batch(&mut self, batch: &Batch, lr: f32) -> miette::Result<StepStats> {
        self.steps += 1;
        let mut stats = self.inner.train_batch(batch, lr)?;
        if self.steps >= self.nan_at {
            stats.loss = f64::NAN;
        }
        Ok(stats)
    }
    fn predict(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<f32>> {
        self.inner.predict(images, n)
    }
    fn state(&self) -> NamedTensors {
        self.inner.state()
    }
    fn load_state(&mut self, state: &NamedTensors) -> miette::Result<()> {
        self.inner.load_state(state)
    }
}

#[test]
fn a_nan_loss_names_epoch_and_batch_and_keeps_the_last_good_checkpoint() {
    let train = image_set(45, 1);
    let data = TrainData {
        images: &train,
        class_weights: None,
        augment: None,
        detection: None,
    };
    let dir = tempfile::tempdir().unwrap();
    // 45 samples in batches of 7: 7 batches an epoch; step 17 is epoch 3, batch 3.
    let mut learner = Diverging {
        inner: SoftmaxRegression::new(16, 3),
        steps: 0,
        nan_at: 17,
    };
    let config = FitConfig {
        epochs: 5,
        batch_size: 7,
        ..Default::default()
    };
    let ctx = FitContext {
        checkpoint_dir: Some(dir.path()),
        ..Default::default()
    };
    let err = fit(&mut learner, &config, &data, None, ctx).unwrap_err();
    match &err {
        TrainError::NonFiniteLoss {
            epoch,
            batch,
            last_good_epoch,
            value,
        } => {
            assert_eq!((*epoch, *batch, *last_good_epoch), (3, 3, 2));
            assert!(value.is_nan());
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("epoch 3, batch 3"), "{err}");
    let loop_state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("loop.json")).unwrap())
            .unwrap();
    assert_eq!(loop_state["completed_epochs"], 2);
    assert!(dir.path().join("epoch-0002.safetensors").exists());
    assert!(!dir.path().join("epoch-0003.safetensors").exists());
}

#[test]
fn early_stopping_ends_training_and_restores_the_best_epoch() {
    let train = image_set(45, 1);
    let data = TrainData {
        images: &train,
        class_weights: None,
        augment: None,
        detection: None,
    };
    // Maximising the training loss: epoch 1 is the best, epoch 2 fails to improve and stops.
    let stop = CallbackSpec::EarlyStopping(EarlyStoppingConfig {
        monitor: "loss".into(),
        mode: Mode::Max,
        restore_best_weights: true,
        ..Default::default()
    });
    let config = FitConfig {
        epochs: 6,
        batch_size: 8,
        learning_rate: 0.05,
        callbacks: vec![stop],
        ..Default::default()
    };
    let mut learner = SoftmaxRegression::new(16, 3);
    let outcome = fit(&mut learner, &config, &data, None, FitContext::default()).unwrap();
    assert_eq!(outcome.history.len(), 2);
    assert_eq!(outcome.stopped_at, Some(2));
    assert_eq!(outcome.restored_from, Some(1));

    let mut one_epoch = SoftmaxRegression::new(16, 3);
    fit(
        &mut one_epoch,
        &FitConfig {
            epochs: 1,
            callbacks: vec![],
            ..config
        },
        &data,
        None,
        FitContext::default(),
    )
    .unwrap();
    assert_eq!(bits(&learner.state()), bits(&one_epoch.state()));
}

#[test]
fn class_weights_scale_the_training_loss_but_not_val_loss() {
    let train = image_set(30, 1);
    let val = image_set(12, 2);
    let config = FitConfig {
        epochs: 1,
        batch_size: 30,
        shuffle: false,
        learning_rate: 1e-9,
        ..Default::default()
    };
    let run = |weights: Option<&[f32]>| {
        let data = TrainData {
            images: &train,
            class_weights: weights,
            augment: None,
            detection: None,
        };
        let mut learner = SoftmaxRegression::new(16, 3);
        learner.l2 = 0.0;
        fit(
            &mut learner,
            &config,
            &data,
            Some(&val),
            FitContext::default(),
        )
        .unwrap()
        .history
        .epochs[0]
            .clone()
    };
    let plain = run(None);
    let doubled = run(Some(&[2.0, 2.0, 2.0]));
    assert!(
        (doubled.loss - 2.0 * plain.loss).abs() < 1e-9,
        "{} vs {}",
        doubled.loss,
        plain.loss
    );
    assert!((doubled.val_loss.unwrap() - plain.val_loss.unwrap()).abs() < 1e-6);
}

#[test]
fn monitoring_a_metric_that_is_not_logged_is_an_error() {
    let train = image_set(10, 1);
    let data = TrainData {
        images: &train,
        class_weights: None,
        augment: None,
        detection: None,
    };
    let config = FitConfig {
        callbacks: vec![CallbackSpec::EarlyStopping(EarlyStoppingConfig::default())],
        ..Default::default()
    };
    let err = fit(
        &mut SoftmaxRegression::new(16, 3),
        &config,
        &data,
        None,
        FitContext::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, TrainError::UnknownMonitor { monitor, .. } if monitor == "val_loss"),
        "{err:?}"
    );
}

#[test]
fn history_csv_round_trips_through_fit_output() {
    let run = run_full(3, None, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.csv");
    run.outcome.history.write_csv(&path).unwrap();
    assert_eq!(
        gpl::train::history::History::read_csv(&path).unwrap(),
        run.outcome.history
    );
}

#[test]
fn cancelling_mid_epoch_leaves_the_previous_epoch_checkpoint() {
    let train = image_set(45, 1);
    let data = TrainData {
        images: &train,
        class_weights: None,
        augment: None,
        detection: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let mut on_progress = |p: EpochProgress| {
        if let EpochProgress::Batch {
            epoch: 2, batch: 3, ..
        } = p
        {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let config = FitConfig {
        epochs: 4,
        batch_size: 7,
        ..Default::default()
    };
    let ctx = FitContext {
        checkpoint_dir: Some(dir.path()),
        cancel: Some(&cancel),
        progress: Some(&mut on_progress),
        prefetch_batches: 3,
    };
    let err = fit(
        &mut SoftmaxRegression::new(16, 3),
        &config,
        &data,
        None,
        ctx,
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Cancelled { epoch: 2 }), "{err:?}");
    let loop_state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("loop.json")).unwrap())
            .unwrap();
    assert_eq!(loop_state["completed_epochs"], 1);

    // Resuming finishes like a run that was never cancelled.
    let mut resumed = SoftmaxRegression::new(16, 3);
    let ctx = FitContext {
        checkpoint_dir: Some(dir.path()),
        ..Default::default()
    };
    let a = fit(&mut resumed, &config, &data, None, ctx).unwrap();
    let mut straight = SoftmaxRegression::new(16, 3);
    let b = fit(&mut straight, &config, &data, None, FitContext::default()).unwrap();
    assert_eq!(bits(&resumed.state()), bits(&straight.state()));
    assert_eq!(without_seconds(&a), without_seconds(&b));
}

#[test]
fn class_weights_must_cover_every_class() {
    let train = image_set(10, 1);
    let weights = [1.0, 2.0];
    let data = TrainData {
        images: &train,
        class_weights: Some(&weights),
        augment: None,
        detection: None,
    };
    let err = fit(
        &mut SoftmaxRegression::new(16, 3),
        &FitConfig::default(),
        &data,
        None,
        FitContext::default(),
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::InvalidConfig { .. }), "{err:?}");
}

#[test]
fn load_weights_replaces_named_tensors_and_keeps_the_rest() {
    let mut learner = SoftmaxRegression::new(16, 3);
    let train = image_set(20, 1);
    let data = TrainData {
        images: &train,
        class_weights: None,
        augment: None,
        detection: None,
    };
    fit(
        &mut learner,
        &FitConfig {
            epochs: 1,
            ..Default::default()
        },
        &data,
        None,
        FitContext::default(),
    )
    .unwrap();
    let before = learner.state();
    let bias = gpl::nn::learner::Tensor {
        shape: vec![3],
        data: vec![0.5, -0.5, 0.25],
    };
    learner
        .load_weights(&NamedTensors::from([(
            "dense/bias".to_string(),
            bias.clone(),
        )]))
        .unwrap();
    let after = learner.state();
    assert_eq!(after["dense/bias"], bias);
    assert_eq!(after["dense/kernel"], before["dense/kernel"]);
    assert_eq!(
        after["optimizer/iterations"],
        before["optimizer/iterations"]
    );
    let wrong = gpl::nn::learner::Tensor {
        shape: vec![4],
        data: vec![0.0; 4],
    };
    assert!(learner
        .load_weights(&NamedTensors::from([("dense/bias".to_string(), wrong)]))
        .is_err());
}

#[test]
fn a_run_that_stopped_early_resumes_to_the_same_restored_end() {
    let train = image_set(45, 1);
    let data = TrainData {
        images: &train,
        class_weights: None,
        augment: None,
        detection: None,
    };
    let stop = CallbackSpec::EarlyStopping(EarlyStoppingConfig {
        monitor: "loss".into(),
        mode: Mode::Max,
        patience: 1,
        restore_best_weights: true,
        ..Default::default()
    });
    let config = FitConfig {
        epochs: 6,
        batch_size: 8,
        learning_rate: 0.05,
        callbacks: vec![stop],
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut first = SoftmaxRegression::new(16, 3);
    let ctx = FitContext {
        checkpoint_dir: Some(dir.path()),
        ..Default::default()
    };
    let a = fit(&mut first, &config, &data, None, ctx).unwrap();
    assert_eq!(
        (a.stopped_at, a.restored_from, a.history.len()),
        (Some(2), Some(1), 2)
    );
    // Run again on the finished checkpoint: no epoch is trained, the same weights come back.
    let mut second = SoftmaxRegression::new(16, 3);
    let ctx = FitContext {
        checkpoint_dir: Some(dir.path()),
        ..Default::default()
    };
    let b = fit(&mut second, &config, &data, None, ctx).unwrap();
    assert_eq!(a, b);
    assert_eq!(bits(&first.state()), bits(&second.state()));
}
