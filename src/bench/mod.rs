//! Benchmarks behind `gpl bench`: each runs our code and, where there is one, the reference
//! (PyTorch) side by side in one run and prints the ratio. No test asserts a timing.
//!
//! - `engine`: GEMM backends, forward and training images/s per net, per-layer time, the
//!   kernels' share of a step, against PyTorch in the same run.
//! - `epoch`: one epoch through the training loop against the raw training step.
//! - `data`: synthesis, HDF5 load, augmentation and artifacts against the data targets.
//! - `explain`: Grad-CAM and filter ascent against PyTorch (pytorch-grad-cam), alternating
//!   round by round.
//! - `detect`: the classical detector against SEP on the same images, alternating rounds
//!   (`scripts/bench_extract_sep.py`).
//! - `search`: the search optimiser's median regret on Branin and Hartmann-6, bayes and
//!   random (`scripts/bench_search_reference.py` runs a Python GP library the same way).

pub mod data;
pub mod detect;
pub mod engine;
pub mod epoch;
pub mod explain;
pub mod search;
