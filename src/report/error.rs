//! The report library's error catalogue.

use std::path::PathBuf;

use miette::Diagnostic;
use thiserror::Error;

#[derive(Debug, Error, Diagnostic)]
pub enum ReportError {
    #[error("could not draw the figure {figure}: {reason}")]
    #[diagnostic(
        code(gpl::report::plot),
        help("this is a bug in the report's plotting code; please report it")
    )]
    Plot { figure: String, reason: String },

    #[error("the embedded font could not be loaded")]
    #[diagnostic(
        code(gpl::report::font),
        help("assets/DejaVuSans.ttf is compiled into gpl; rebuild from a clean checkout")
    )]
    Font,

    #[error("could not write {path}")]
    #[diagnostic(
        code(gpl::report::io),
        help("check that the run directory exists and is writable")
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not serialise metrics.yaml: {reason}")]
    #[diagnostic(code(gpl::report::yaml))]
    Yaml { reason: String },

    #[error("could not encode the figure {figure} as PNG: {reason}")]
    #[diagnostic(code(gpl::report::png))]
    Png { figure: String, reason: String },
}
