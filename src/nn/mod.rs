//! The compute engine: model IR, operators with forward and backward kernels, autograd, optimizers.

pub mod ir;
