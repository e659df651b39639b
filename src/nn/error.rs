//! Errors of the engine: bad models, bad batches, diverged training, bad checkpoints.

use miette::Diagnostic;
use thiserror::Error;

#[derive(Debug, Error, Diagnostic)]
pub enum EngineError {
    #[error("layer `{layer}`: {message}")]
    #[diagnostic(
        code(gpl::engine::shape),
        help("check the model block; `gpl check` prints every layer's shape")
    )]
    Shape { layer: String, message: String },

    #[error("{what}: expected {expected} values, got {got}")]
    #[diagnostic(
        code(gpl::engine::batch),
        help("images are n × height × width × channels f32 in NHWC order, one label and one weight per image")
    )]
    Batch {
        what: &'static str,
        expected: usize,
        got: usize,
    },

    #[error("label {label} is outside the model's {classes} classes")]
    #[diagnostic(
        code(gpl::engine::label),
        help("the final dense layer needs one unit per class")
    )]
    Label { label: u32, classes: usize },

    #[error("output `{output}` cannot train on {given}: {reason}")]
    #[diagnostic(code(gpl::engine::targets))]
    Targets {
        output: String,
        given: String,
        reason: String,
    },

    #[error("the loss became {loss} (not finite); the weights were not updated")]
    #[diagnostic(
        code(gpl::engine::non_finite_loss),
        help("lower the learning rate, or check the inputs for NaN values")
    )]
    NonFiniteLoss { loss: f64 },

    #[error("tensor `{name}` is missing from the state")]
    #[diagnostic(
        code(gpl::engine::missing_tensor),
        help("the state must come from a model with the same layer names")
    )]
    MissingTensor { name: String },

    #[error("tensor `{name}` has shape {got:?}, the model needs {expected:?}")]
    #[diagnostic(
        code(gpl::engine::tensor_shape),
        help("the state must come from a model with the same architecture")
    )]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    #[error("cannot {action} `{path}`: {source}")]
    #[diagnostic(code(gpl::engine::io))]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },

    #[error("`{path}` is not a gpl model checkpoint: {message}")]
    #[diagnostic(
        code(gpl::engine::checkpoint_format),
        help("gpl writes safetensors with the model IR in the `gpl_ir` metadata entry")
    )]
    Checkpoint { path: String, message: String },
}
