//! Hyper-parameter search (issue 15), as a library the search stage calls: a space of
//! integer, float and choice dimensions (`space`), a Gaussian process with a Matérn-5/2 ARD
//! kernel (`gp`, over `linalg` and `lbfgs`), log expected improvement and its maximisation
//! over the space's points (`acquisition`), a Latin-hypercube initial design (`design`), and
//! `optimizer::Search::propose`, which ties them together with the random and grid
//! strategies. Nothing here trains, reads or writes files: the caller owns the trials.

pub mod acquisition;
pub mod design;
pub mod gp;
pub mod lbfgs;
pub mod linalg;
pub mod optimizer;
pub mod space;

pub use gp::Noise;
pub use optimizer::{Goal, Search, Strategy, Surrogate, Trial};
pub use space::{Dim, Domain, Level, Point, Space, SpaceError, Value};
