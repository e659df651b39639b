//! Atomic file writes. Everything gpl writes goes through a temp file in the same folder, is
//! synced, then renamed over the target, so a crash or Ctrl-C never leaves a half-written file.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes `bytes` to `path` atomically, creating its folder when missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |out| out.write_all(bytes))
}

/// Streams into `path` atomically: `write` fills a buffered temp file that replaces `path`
/// only once it is complete and synced.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let temp = temp_beside(path);
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(&temp)?);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        // Best effort: the temp file is garbage either way.
        let _ = fs::remove_file(&temp);
    }
    result
}

/// A temp name in `path`'s folder (so the final rename is atomic), unique per process and
/// call, so concurrent writers of one file never share a temp. For writers that need a path
/// of their own, such as libhdf5.
pub fn temp_beside(path: &Path) -> PathBuf {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        unique_suffix()
    ))
}

/// A suffix unique within this process and very likely across processes.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{nanos:x}{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `root/relative` as a folder gpl may write in and delete from, created when missing. Each
/// part of `relative` that exists must be a folder, or a symlink whose target (resolved in
/// full) is a folder inside `root`: gpl never writes or deletes through a link that leads
/// out of the project. `relative` must not climb (`..`) or be absolute.
pub fn confined_dir(root: &Path, relative: &Path) -> io::Result<PathBuf> {
    confined(root, relative, true)
}

/// Like [`confined_dir`] but creates nothing: `Ok(None)` when a part is missing.
pub fn existing_confined_dir(root: &Path, relative: &Path) -> io::Result<Option<PathBuf>> {
    match confined(root, relative, false) {
        Ok(dir) => Ok(Some(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn confined(root: &Path, relative: &Path, create: bool) -> io::Result<PathBuf> {
    let canonical_root = root.canonicalize()?;
    let mut at = root.to_path_buf();
    for part in relative.components() {
        let std::path::Component::Normal(name) = part else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} leaves its folder", relative.display()),
            ));
        };
        at.push(name);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = at.canonicalize()?;
                if !target.starts_with(&canonical_root) || !target.is_dir() {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "{} is a symlink to {}, outside {}; gpl does not write or delete through it",
                            at.display(),
                            target.display(),
                            root.display()
                        ),
                    ));
                }
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is not a folder", at.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => match fs::create_dir(&at) {
                // Another stage of this run made it first: fine if it is a real folder.
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        && fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) => {}
                other => other?,
            },
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}
