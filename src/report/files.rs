//! Atomic file writes: a temporary file in the target's directory, then a rename, so a reader
//! never sees half a report.

use std::path::Path;

use super::ReportError;

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}
