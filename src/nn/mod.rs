//! The compute engine: model IR, kernels (`ops`), the model (layers and parameters), its
//! luminal graphs (`graph`: layers as luminal operators, autograd and fusion as compiler
//! passes), the network API over them, optimizers, and safetensors checkpoints.
//!
//! ```text
//! let mut net = Network::new(&ir, seed, OptimizerConfig::adam())?;   // compile
//! net.train_batch(&batch, lr)?;                                      // Learner
//! net.class_score_gradients(&images, &classes, Some(layer))?;        // Grad-CAM
//! net.save(path)?; let net = Network::load(path)?;                   // safetensors + IR
//! ```

pub mod error;
pub mod frozen;
mod fusion;
pub mod gemm;
mod graph;
pub mod io;
pub mod ir;
pub mod learner;
mod model;
pub mod network;
pub mod ops;
pub mod optim;
pub mod real;
pub mod simd;

/// The engine's numerics generation, part of the cache key of every stage that runs the
/// engine (train, crossval folds). Bump it whenever a change to the engine (a kernel, a
/// loss, an initialisation, an optimizer, the order of a reduction) can alter any stage's
/// outputs, so cached results computed by the old numerics are not served. Cosmetic and
/// speed-only changes that keep outputs bit-identical do not bump it.
///
/// 1: the luminal engine as first released (keyed then by the crate version only);
/// 2: models as graphs, label smoothing applied;
/// 3: direct convolution for few input channels (its sums round in another order);
/// 4: the depthwise convolution kernel (its sums, and the bias gradient's, round in another
/// order than grouped im2col's);
/// 5: training batchnorm's statistics in one pass, per-sample moments in f64 about the
/// running mean (the same loop in a convolution's epilogue when the two are fused);
/// 6: direct convolution (AVX-512) for every ungrouped layer at least 8 pixels wide where
/// the CPU has AVX-512, its input gradient included (its sums round in another order).
pub const ENGINE_EPOCH: u32 = 6;

pub use error::EngineError;
pub use model::Param;
pub use network::{ActivationGradients, MemoryReport, Network};
pub use optim::OptimizerConfig;
