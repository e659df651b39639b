//! The one font every figure uses, compiled into the binary: DejaVu Sans (Bitstream Vera
//! licence, assets/DejaVuSans.LICENSE), so plots never depend on the fonts a machine has.

use std::sync::OnceLock;

use plotters::style::{register_font, FontStyle};

use super::ReportError;

/// The family name figures ask plotters for.
pub(crate) const FAMILY: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the embedded font with plotters once per process.
pub(crate) fn ensure_registered() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ReportError::Font)
    }
}
