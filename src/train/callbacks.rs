//! Keras 3 callbacks: EarlyStopping, ReduceLROnPlateau and ModelCheckpoint(save_best_only).
//!
//! The decision logic follows Keras 3's source (`keras/src/callbacks/monitor_callback.py`,
//! `early_stopping.py`, `reduce_lr_on_plateau.py`, `model_checkpoint.py`) step for step, so
//! a `.gpl` file that says `early_stopping(patience: 8)` stops at the epoch Keras would.
//! `tests/fixtures/train/make_callback_fixtures.py` re-implements the same source in Python
//! and `tests/it/train_callbacks.rs` checks every decision against it. Each callback only
//! decides; the epoch loop (`fit`) acts (snapshots weights, changes the learning rate,
//! stops) and keeps the state serialisable so a resumed run decides identically.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which way a monitored quantity improves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Maximise names containing "acc", minimise the rest (losses).
    #[default]
    Auto,
    Min,
    Max,
}

impl Mode {
    /// True when larger values are better. Keras 3 asks the metric object for its
    /// direction; for the metrics gpl logs that is exactly "the name contains acc".
    pub fn maximises(self, monitor: &str) -> bool {
        match self {
            Mode::Min => false,
            Mode::Max => true,
            Mode::Auto => monitor.contains("acc"),
        }
    }
}

/// The metrics of one finished epoch, by Keras log name (`loss`, `accuracy`, `val_loss`, ...).
pub type EpochLogs = BTreeMap<String, f64>;

/// The MonitorCallback comparison: `current - min_delta > reference` when maximising,
/// `current + min_delta < reference` when minimising (`min_delta` is made non-negative).
fn is_improvement(maximise: bool, min_delta: f64, current: f64, reference: f64) -> bool {
    if maximise {
        current - min_delta > reference
    } else {
        current + min_delta < reference
    }
}

/// The starting "best" of a MonitorCallback without a given value: the worst possible.
fn worst(maximise: bool) -> f64 {
    if maximise {
        f64::NEG_INFINITY
    } else {
        f64::INFINITY
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStoppingConfig {
    pub monitor: String,
    pub min_delta: f64,
    pub patience: usize,
    pub mode: Mode,
    /// Training stops unless the monitor beats this within `patience` epochs.
    pub baseline: Option<f64>,
    pub restore_best_weights: bool,
    /// Epochs (0-based) before monitoring starts.
    pub start_from_epoch: usize,
}

impl Default for EarlyStoppingConfig {
    /// Keras's defaults.
    fn default() -> Self {
        EarlyStoppingConfig {
            monitor: "val_loss".into(),
            min_delta: 0.0,
            patience: 0,
            mode: Mode::Auto,
            baseline: None,
            restore_best_weights: false,
            start_from_epoch: 0,
        }
    }
}

/// What EarlyStopping carries from epoch to epoch (saved in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStoppingState {
    pub wait: usize,
    /// 0-based epoch at which it stopped training; 0 when it has not (Keras's convention).
    pub stopped_epoch: usize,
    #[serde(with = "crate::train::float_serde")]
    pub best: f64,
    pub best_epoch: usize,
    /// The 0-based epoch whose weights are held as the best (Keras's `best_weights`),
    /// `None` before any epoch was monitored or without `restore_best_weights`.
    pub best_weights_epoch: Option<usize>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EarlyStoppingDecision {
    /// Keep a copy of the current weights as the best ones.
    pub snapshot_weights: bool,
    pub stop_training: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    pub config: EarlyStoppingConfig,
    pub state: EarlyStoppingState,
}

impl EarlyStopping {
    pub fn new(config: EarlyStoppingConfig) -> Self {
        let maximise = config.mode.maximises(&config.monitor);
        let state = EarlyStoppingState {
            wait: 0,
            stopped_epoch: 0,
            best: worst(maximise),
            best_epoch: 0,
            best_weights_epoch: None,
        };
        EarlyStopping { config, state }
    }

    fn maximise(&self) -> bool {
        self.config.mode.maximises(&self.config.monitor)
    }

    fn improves(&self, current: f64, reference: f64) -> bool {
        is_improvement(
            self.maximise(),
            self.config.min_delta.abs(),
            current,
            reference,
        )
    }

    /// Keras's `on_epoch_end`; `current` is the monitored value (`None` when not logged).
    pub fn on_epoch_end(&mut self, epoch: usize, current: Option<f64>) -> EarlyStoppingDecision {
        let mut decision = EarlyStoppingDecision::default();
        let Some(current) = current else {
            return decision;
        };
        if epoch < self.config.start_from_epoch {
            return decision;
        }
        let state = &mut self.state;
        if self.config.restore_best_weights && state.best_weights_epoch.is_none() {
            // Keras: "if best weights were never set, then the current weights are the best".
            state.best_weights_epoch = Some(epoch);
            state.best_epoch = epoch;
            decision.snapshot_weights = true;
        }
        self.state.wait += 1;
        if self.improves(current, self.state.best) {
            self.state.best = current;
            self.state.best_epoch = epoch;
            if self.config.restore_best_weights {
                self.state.best_weights_epoch = Some(epoch);
                decision.snapshot_weights = true;
            }
            // Only restart the wait when the value beats both the baseline and the best.
            if self
                .config
                .baseline
                .is_none_or(|b| self.improves(current, b))
            {
                self.state.wait = 0;
            }
            return decision;
        }
        if self.state.wait >= self.config.patience && epoch > 0 {
            self.state.stopped_epoch = epoch;
            decision.stop_training = true;
        }
        decision
    }

    /// Keras 3's `on_train_end`: the epoch whose weights to restore, whatever ended training
    /// (this callback, another one, or the last epoch).
    pub fn on_train_end(&self) -> Option<usize> {
        if self.config.restore_best_weights {
            self.state.best_weights_epoch
        } else {
            None
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReduceLrConfig {
    pub monitor: String,
    /// `new_lr = lr * factor`; must be below 1.
    pub factor: f64,
    pub patience: usize,
    pub mode: Mode,
    pub min_delta: f64,
    pub cooldown: usize,
    pub min_lr: f64,
}

impl Default for ReduceLrConfig {
    /// Keras's defaults.
    fn default() -> Self {
        ReduceLrConfig {
            monitor: "val_loss".into(),
            factor: 0.1,
            patience: 10,
            mode: Mode::Auto,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReduceLrState {
    pub wait: usize,
    pub cooldown_counter: usize,
    #[serde(with = "crate::train::float_serde")]
    pub best: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReduceLrOnPlateau {
    pub config: ReduceLrConfig,
    pub state: ReduceLrState,
}

impl ReduceLrOnPlateau {
    pub fn new(config: ReduceLrConfig) -> Self {
        let maximise = config.mode.maximises(&config.monitor);
        ReduceLrOnPlateau {
            state: ReduceLrState {
                wait: 0,
                cooldown_counter: 0,
                best: worst(maximise),
            },
            config,
        }
    }

    fn in_cooldown(&self) -> bool {
        self.state.cooldown_counter > 0
    }

    /// Keras's `on_epoch_end`: returns the new learning rate when it reduces `lr`.
    /// Like Keras, the optimizer holds the rate as f32 and the product is taken in f64.
    pub fn on_epoch_end(&mut self, current: Option<f64>, lr: f32) -> Option<f32> {
        let current = current?;
        if self.in_cooldown() {
            self.state.cooldown_counter -= 1;
            self.state.wait = 0;
        }
        // ReduceLROnPlateau keeps its own comparison: min_delta is not made non-negative.
        let improved = if self.config.mode.maximises(&self.config.monitor) {
            current > self.state.best + self.config.min_delta
        } else {
            current < self.state.best - self.config.min_delta
        };
        if improved {
            self.state.best = current;
            self.state.wait = 0;
        } else if !self.in_cooldown() {
            self.state.wait += 1;
            if self.state.wait >= self.config.patience {
                let old_lr = lr as f64;
                if old_lr > self.config.min_lr as f32 as f64 {
                    let new_lr = (old_lr * self.config.factor).max(self.config.min_lr);
                    self.state.cooldown_counter = self.config.cooldown;
                    self.state.wait = 0;
                    return Some(new_lr as f32);
                }
            }
        }
        None
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelCheckpointConfig {
    pub monitor: String,
    pub mode: Mode,
    pub save_best_only: bool,
    /// Keras's `initial_value_threshold`: the best value to beat before the first save.
    pub initial_value_threshold: Option<f64>,
}

impl Default for ModelCheckpointConfig {
    /// Keras's defaults, except that gpl's checkpoint callback exists to keep the best model.
    fn default() -> Self {
        ModelCheckpointConfig {
            monitor: "val_loss".into(),
            mode: Mode::Auto,
            save_best_only: true,
            initial_value_threshold: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCheckpointState {
    #[serde(with = "crate::train::float_serde")]
    pub best: f64,
    /// 0-based epoch of the last saved weights.
    pub saved_epoch: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelCheckpoint {
    pub config: ModelCheckpointConfig,
    pub state: ModelCheckpointState,
}

impl ModelCheckpoint {
    pub fn new(config: ModelCheckpointConfig) -> Self {
        let maximise = config.mode.maximises(&config.monitor);
        let best = config.initial_value_threshold.unwrap_or(worst(maximise));
        ModelCheckpoint {
            config,
            state: ModelCheckpointState {
                best,
                saved_epoch: None,
            },
        }
    }

    /// Keras's `_should_save_model` for `save_freq="epoch"`: true when this epoch's
    /// weights are to be saved. A missing monitor saves, as in Keras.
    pub fn on_epoch_end(&mut self, epoch: usize, current: Option<f64>) -> bool {
        let save = match current {
            Some(current) if self.config.save_best_only => {
                let maximise = self.config.mode.maximises(&self.config.monitor);
                // MonitorCallback's min_delta is 0 for ModelCheckpoint.
                if is_improvement(maximise, 0.0, current, self.state.best) {
                    self.state.best = current;
                    true
                } else {
                    false
                }
            }
            _ => true,
        };
        if save {
            self.state.saved_epoch = Some(epoch);
        }
        save
    }
}

/// A callback as written in a training config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallbackSpec {
    EarlyStopping(EarlyStoppingConfig),
    ReduceLrOnPlateau(ReduceLrConfig),
    ModelCheckpoint(ModelCheckpointConfig),
}

impl CallbackSpec {
    pub fn monitor(&self) -> &str {
        match self {
            CallbackSpec::EarlyStopping(c) => &c.monitor,
            CallbackSpec::ReduceLrOnPlateau(c) => &c.monitor,
            CallbackSpec::ModelCheckpoint(c) => &c.monitor,
        }
    }
}

/// A live callback with its state.
#[derive(Clone, Debug, PartialEq)]
pub enum Callback {
    EarlyStopping(EarlyStopping),
    ReduceLrOnPlateau(ReduceLrOnPlateau),
    ModelCheckpoint(ModelCheckpoint),
}

/// A callback's state, as checkpoints store it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallbackState {
    EarlyStopping(EarlyStoppingState),
    ReduceLrOnPlateau(ReduceLrState),
    ModelCheckpoint(ModelCheckpointState),
}

impl Callback {
    pub fn new(spec: &CallbackSpec) -> Self {
        match spec {
            CallbackSpec::EarlyStopping(c) => {
                Callback::EarlyStopping(EarlyStopping::new(c.clone()))
            }
            CallbackSpec::ReduceLrOnPlateau(c) => {
                Callback::ReduceLrOnPlateau(ReduceLrOnPlateau::new(c.clone()))
            }
            CallbackSpec::ModelCheckpoint(c) => {
                Callback::ModelCheckpoint(ModelCheckpoint::new(c.clone()))
            }
        }
    }

    pub fn state(&self) -> CallbackState {
        match self {
            Callback::EarlyStopping(c) => CallbackState::EarlyStopping(c.state.clone()),
            Callback::ReduceLrOnPlateau(c) => CallbackState::ReduceLrOnPlateau(c.state.clone()),
            Callback::ModelCheckpoint(c) => CallbackState::ModelCheckpoint(c.state.clone()),
        }
    }

    /// Restores a saved state; false when the state belongs to another kind of callback.
    pub fn set_state(&mut self, state: &CallbackState) -> bool {
        match (self, state) {
            (Callback::EarlyStopping(c), CallbackState::EarlyStopping(s)) => c.state = s.clone(),
            (Callback::ReduceLrOnPlateau(c), CallbackState::ReduceLrOnPlateau(s)) => {
                c.state = s.clone()
            }
            (Callback::ModelCheckpoint(c), CallbackState::ModelCheckpoint(s)) => {
                c.state = s.clone()
            }
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_mode_maximises_accuracy_names_only() {
        assert!(Mode::Auto.maximises("val_accuracy"));
        assert!(Mode::Auto.maximises("acc"));
        assert!(!Mode::Auto.maximises("val_loss"));
        assert!(Mode::Max.maximises("val_loss"));
        assert!(!Mode::Min.maximises("accuracy"));
    }

    #[test]
    fn callback_specs_read_with_keras_defaults() {
        let spec: CallbackSpec =
            serde_json::from_str(r#"{"kind": "reduce_lr_on_plateau", "factor": 0.5}"#).unwrap();
        let CallbackSpec::ReduceLrOnPlateau(c) = spec else {
            panic!("wrong kind")
        };
        assert_eq!(c.min_delta, 1e-4);
        assert_eq!(c.patience, 10);
        assert_eq!(c.monitor, "val_loss");
    }
}
