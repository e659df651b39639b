//! Training stages: the epoch loop, Keras-exact callbacks, history, checkpoints, predictions.

pub mod learner;
