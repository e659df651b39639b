//! Every error the training library reports, with stable diagnostic codes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TrainError {
    #[error("training was cancelled during epoch {epoch}")]
    #[diagnostic(
        code(gpl::train::cancelled),
        help("the last completed epoch's checkpoint is kept; run again to resume from it")
    )]
    Cancelled { epoch: usize },

    #[error("the training loss became {value} in epoch {epoch}, batch {batch}")]
    #[diagnostic(
        code(gpl::train::non_finite_loss),
        help("lower the learning rate or check the inputs; the last good checkpoint (epoch {last_good_epoch}) is kept")
    )]
    NonFiniteLoss {
        epoch: usize,
        batch: usize,
        value: f64,
        last_good_epoch: usize,
    },

    #[error("callback monitors `{monitor}`, which this training does not log")]
    #[diagnostic(code(gpl::train::unknown_monitor), help("available: {available}"))]
    UnknownMonitor { monitor: String, available: String },

    #[error("invalid training setting: {message}")]
    #[diagnostic(code(gpl::train::invalid_config))]
    InvalidConfig { message: String },

    #[error("the checkpoint in {} was written by a different training setup", dir.display())]
    #[diagnostic(
        code(gpl::train::checkpoint_mismatch),
        help("remove that directory to start over; its config fingerprint is {found}, this run's is {expected}")
    )]
    CheckpointMismatch {
        dir: PathBuf,
        expected: String,
        found: String,
    },

    #[error("cannot read the checkpoint in {}: {message}", dir.display())]
    #[diagnostic(
        code(gpl::train::bad_checkpoint),
        help("remove that directory to start over")
    )]
    BadCheckpoint { dir: PathBuf, message: String },

    #[error("cannot {action} {}: {source}", path.display())]
    #[diagnostic(code(gpl::train::io))]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not a valid safetensors file: {message}", path.display())]
    #[diagnostic(code(gpl::train::bad_safetensors))]
    BadSafetensors { path: PathBuf, message: String },

    #[error("{} is not a readable Keras weights file: {message}", path.display())]
    #[diagnostic(
        code(gpl::train::bad_keras_weights),
        help("expected the HDF5 layout of Keras `model.save_weights` (.h5 or .weights.h5)")
    )]
    BadKerasWeights { path: PathBuf, message: String },

    #[error("layer `{layer}` has no weights in {}", path.display())]
    #[diagnostic(
        code(gpl::train::missing_layer_weights),
        help("layers in the file: {available}")
    )]
    MissingLayerWeights {
        layer: String,
        path: PathBuf,
        available: String,
    },

    #[error("weight `{name}` has shape {found:?} in {}, but the model expects {expected:?}", path.display())]
    #[diagnostic(
        code(gpl::train::weight_shape_mismatch),
        help("the layer `{layer}` in the model must match the one that produced the file")
    )]
    WeightShapeMismatch {
        layer: String,
        name: String,
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("no layer named `{layer}` in model `{model}`")]
    #[diagnostic(code(gpl::train::unknown_layer), help("layers: {available}"))]
    UnknownLayer {
        layer: String,
        model: String,
        available: String,
    },

    #[error("{} is not a valid predictions file: {message}", path.display())]
    #[diagnostic(code(gpl::train::bad_predictions))]
    BadPredictions { path: PathBuf, message: String },

    #[error("{} is not a valid history file: {message}", path.display())]
    #[diagnostic(code(gpl::train::bad_history))]
    BadHistory { path: PathBuf, message: String },

    #[error("the learner failed: {message}")]
    #[diagnostic(code(gpl::train::learner))]
    Learner { message: String },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        TrainError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Wraps an engine error (the `Learner` trait reports `miette::Report`s).
    pub(crate) fn learner(report: miette::Report) -> Self {
        TrainError::Learner {
            message: report.to_string(),
        }
    }
}
