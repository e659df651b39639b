//! Drives each Keras callback with the scripted metric sequences in
//! tests/fixtures/train/callback_cases.json (written by make_callback_fixtures.py, which
//! transcribes Keras 3's callback source) and checks every decision, epoch by epoch.

use gpl::train::callbacks::*;
use serde_json::Value;

fn cases() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/train/callback_cases.json"
    ))
    .expect("fixture file is committed");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The fixture writes non-finite numbers as "nan", "inf", "-inf".
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().expect("f64"),
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        other => panic!("not a number: {other}"),
    }
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn values(case: &Value) -> Vec<f64> {
    case["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(num)
        .collect()
}

fn opt_usize(v: &Value) -> Option<usize> {
    v.as_u64().map(|n| n as usize)
}

#[test]
fn early_stopping_matches_keras_epoch_by_epoch() {
    let all = cases();
    let list = all["early_stopping"].as_array().expect("list");
    assert!(list.len() >= 10);
    for case in list {
        let name = case["name"].as_str().expect("name");
        let config: EarlyStoppingConfig =
            serde_json::from_value(case["config"].clone()).expect("config");
        let mut es = EarlyStopping::new(config);
        let steps = case["steps"].as_array().expect("steps");
        let mut run = 0;
        for (epoch, value) in values(case).into_iter().enumerate() {
            let decision = es.on_epoch_end(epoch, Some(value));
            let want = &steps[epoch];
            assert_eq!(
                decision.stop_training,
                want["stop"].as_bool().expect("bool"),
                "{name} epoch {epoch} stop"
            );
            assert_eq!(
                es.state.wait,
                want["wait"].as_u64().expect("wait") as usize,
                "{name} epoch {epoch} wait"
            );
            assert!(
                same(es.state.best, num(&want["best"])),
                "{name} epoch {epoch} best {}",
                es.state.best
            );
            assert_eq!(
                es.state.best_epoch,
                want["best_epoch"].as_u64().expect("u64") as usize,
                "{name} epoch {epoch}"
            );
            assert_eq!(
                es.state.best_weights_epoch,
                opt_usize(&want["best_weights_epoch"]),
                "{name} epoch {epoch}"
            );
            run += 1;
            if decision.stop_training {
                break;
            }
        }
        assert_eq!(
            run,
            case["epochs_run"].as_u64().expect("u64") as usize,
            "{name}: epochs run"
        );
        assert_eq!(
            es.state.stopped_epoch,
            case["stopped_epoch"].as_u64().expect("u64") as usize,
            "{name}"
        );
        assert_eq!(
            es.on_train_end(),
            opt_usize(&case["restored_epoch"]),
            "{name}: restored epoch"
        );
    }
}

#[test]
fn reduce_lr_on_plateau_matches_keras_epoch_by_epoch() {
    let all = cases();
    let list = all["reduce_lr"].as_array().expect("list");
    assert!(list.len() >= 8);
    for case in list {
        let name = case["name"].as_str().expect("name");
        let config: ReduceLrConfig =
            serde_json::from_value(case["config"].clone()).expect("config");
        let mut rlr = ReduceLrOnPlateau::new(config);
        let mut lr = f32::from_bits(case["initial_lr_f32_bits"].as_u64().expect("bits") as u32);
        for (epoch, (value, want)) in values(case)
            .into_iter()
            .zip(case["steps"].as_array().expect("steps"))
            .enumerate()
        {
            if let Some(new_lr) = rlr.on_epoch_end(Some(value), lr) {
                lr = new_lr;
            }
            // Keras stores the rate in a float32 variable: compare its bits.
            assert_eq!(
                lr.to_bits() as u64,
                want["lr_f32_bits"].as_u64().expect("bits"),
                "{name} epoch {epoch} lr {lr}"
            );
            assert_eq!(
                rlr.state.wait,
                want["wait"].as_u64().expect("u64") as usize,
                "{name} epoch {epoch} wait"
            );
            assert_eq!(
                rlr.state.cooldown_counter,
                want["cooldown_counter"].as_u64().expect("u64") as usize,
                "{name} epoch {epoch} cooldown"
            );
            assert!(
                same(rlr.state.best, num(&want["best"])),
                "{name} epoch {epoch} best"
            );
        }
    }
}

#[test]
fn model_checkpoint_matches_keras_epoch_by_epoch() {
    let all = cases();
    let list = all["model_checkpoint"].as_array().expect("list");
    assert!(list.len() >= 4);
    for case in list {
        let name = case["name"].as_str().expect("name");
        let config: ModelCheckpointConfig =
            serde_json::from_value(case["config"].clone()).expect("config");
        let mut mc = ModelCheckpoint::new(config);
        for (epoch, (value, want)) in values(case)
            .into_iter()
            .zip(case["steps"].as_array().expect("steps"))
            .enumerate()
        {
            let saved = mc.on_epoch_end(epoch, Some(value));
            assert_eq!(
                saved,
                want["saved"].as_bool().expect("bool"),
                "{name} epoch {epoch} saved"
            );
            assert!(
                same(mc.state.best, num(&want["best"])),
                "{name} epoch {epoch} best"
            );
        }
    }
}

#[test]
fn callback_state_survives_a_json_round_trip() {
    let mut es = EarlyStopping::new(EarlyStoppingConfig {
        restore_best_weights: true,
        patience: 2,
        ..Default::default()
    });
    let before = Callback::EarlyStopping(es.clone()).state();
    // The starting best is +inf, which JSON cannot hold as a number.
    let text = serde_json::to_string(&before).expect("serialise");
    let back: CallbackState = serde_json::from_str(&text).expect("deserialise");
    assert_eq!(back, before);
    es.on_epoch_end(0, Some(0.5));
    let mut restored = Callback::new(&CallbackSpec::EarlyStopping(es.config.clone()));
    assert!(restored.set_state(&Callback::EarlyStopping(es.clone()).state()));
    assert_eq!(restored, Callback::EarlyStopping(es));
}
