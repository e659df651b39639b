//! Syntax: the pest grammar behind a wall, the AST with spans, and `gpl fmt`.
//!
//! `parse::parse_file` is the only way text becomes an [`ast::File`]; no pest type leaves
//! `parse.rs`. `fmt::format_file` prints an AST in the canonical layout.

pub mod ast;
pub mod fmt;
pub mod parse;
pub mod span;

pub use ast::*;
pub use span::{FileId, Name, Span};
