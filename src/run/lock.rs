//! Locks between gpl processes, on this machine or on others that share the project folder:
//! one lock file per name under `.gpl/locks/`, held with flock(2) through the `fs4` crate.
//! The cache holds an entry's lock shared while a run reads the entry and exclusively while
//! one process computes, replaces or removes it (docs/decisions.md, "Concurrent runs").
//!
//! The kernel drops a lock when its process exits or is killed, so a lock file left behind
//! locks like a new one. A lock file is deleted only by the holder of its exclusive lock, and
//! a lock counts only while its file is still the one at its path: a process that was
//! waiting on a file deleted meanwhile opens the new one and tries again.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest pause between two tries of a lock someone else holds. Waiting polls rather
/// than blocking in flock(2), so Ctrl-C and watch can cancel a waiting stage.
const MAX_POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders: the entry is being read.
    Shared,
    /// One holder: the entry is being written or removed.
    Exclusive,
}

/// A held lock; dropping it releases the lock (closing the file does).
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
    mode: LockMode,
}

impl FileLock {
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// Deletes the lock file, then releases the lock. Only an exclusive holder may: a
    /// shared holder is left as it is.
    pub fn remove(self) -> io::Result<()> {
        if self.mode != LockMode::Exclusive {
            return Ok(());
        }
        let removed = fs::remove_file(&self.path);
        drop(self.file);
        match removed {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The folder of lock files (`.gpl/locks/`).
#[derive(Clone, Debug)]
pub struct LockDir {
    dir: PathBuf,
}

impl LockDir {
    pub fn new(dir: impl Into<PathBuf>) -> LockDir {
        LockDir { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.lock"))
    }

    /// Takes the lock when nobody holds it in a conflicting mode; `Ok(None)` when someone does.
    pub fn try_lock(&self, name: &str, mode: LockMode) -> io::Result<Option<FileLock>> {
        let path = self.path(name);
        loop {
            // Opening follows a symlink, which could lead out of the project.
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is a symlink; gpl does not lock through it",
                        path.display()
                    ),
                ));
            }
            // Read and write: on NFS, flock is emulated with fcntl locks, and an exclusive
            // one needs a file opened for writing.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            // Called as fs4's functions: std's `File` has inherent methods of the same names.
            let taken = match mode {
                LockMode::Shared => fs4::FileExt::try_lock_shared(&file),
                LockMode::Exclusive => fs4::FileExt::try_lock(&file),
            };
            match taken {
                Ok(()) => {}
                Err(fs4::TryLockError::WouldBlock) => return Ok(None),
                Err(fs4::TryLockError::Error(e)) => return Err(e),
            }
            if still_at(&file, &path)? {
                return Ok(Some(FileLock { file, path, mode }));
            }
            // Its holder deleted the file after we opened it: lock the one there now.
        }
    }

    /// Takes the lock, waiting as long as someone holds it. `waiting` is called once, when
    /// the lock cannot be had at once; `cancelled` is asked between tries, and a wait it ends
    /// returns an `Interrupted` error.
    pub fn lock(
        &self,
        name: &str,
        mode: LockMode,
        waiting: impl FnOnce(),
        cancelled: impl Fn() -> bool,
    ) -> io::Result<FileLock> {
        if let Some(lock) = self.try_lock(name, mode)? {
            return Ok(lock);
        }
        waiting();
        let mut pause = Duration::from_millis(2);
        loop {
            if cancelled() {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "cancelled while waiting for a lock",
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_POLL);
            if let Some(lock) = self.try_lock(name, mode)? {
                return Ok(lock);
            }
        }
    }

    /// Names of the lock files present (held or not).
    pub fn names(&self) -> io::Result<Vec<String>> {
        let items = match fs::read_dir(&self.dir) {
            Ok(items) => items,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for item in items {
            let file_name = item?.file_name().to_string_lossy().into_owned();
            if let Some(name) = file_name.strip_suffix(".lock") {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Whether `file` is still the file at `path` (not deleted or replaced since it was opened).
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Elsewhere an open file cannot be deleted, so it is still there.
#[cfg(not(unix))]
fn still_at(_file: &File, _path: &Path) -> io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn shared_holders_coexist_and_exclude_an_exclusive_one() {
        let root = tempfile::tempdir().unwrap();
        let locks = LockDir::new(root.path());
        let a = locks.try_lock("x", LockMode::Shared).unwrap().unwrap();
        let b = locks.try_lock("x", LockMode::Shared).unwrap().unwrap();
        assert!(locks.try_lock("x", LockMode::Exclusive).unwrap().is_none());
        drop((a, b));
        let exclusive = locks.try_lock("x", LockMode::Exclusive).unwrap().unwrap();
        assert!(locks.try_lock("x", LockMode::Shared).unwrap().is_none());
        assert!(locks.try_lock("y", LockMode::Exclusive).unwrap().is_some());
        exclusive.remove().unwrap();
        assert_eq!(locks.names().unwrap(), ["y"]);
    }

    #[test]
    fn a_waiter_on_a_deleted_lock_file_takes_the_new_one() {
        let root = tempfile::tempdir().unwrap();
        let locks = LockDir::new(root.path());
        let holder = locks.try_lock("x", LockMode::Exclusive).unwrap().unwrap();
        let waited = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (locks, waited) = (locks.clone(), waited.clone());
            std::thread::spawn(move || {
                locks
                    .lock(
                        "x",
                        LockMode::Exclusive,
                        || waited.store(true, Ordering::SeqCst),
                        || false,
                    )
                    .unwrap()
            })
        };
        while !waited.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        holder.remove().unwrap();
        let taken = waiter.join().unwrap();
        // Had the waiter kept the deleted file, a third process could lock a new one too.
        assert!(locks.try_lock("x", LockMode::Shared).unwrap().is_none());
        drop(taken);
        assert!(locks.try_lock("x", LockMode::Shared).unwrap().is_some());
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_file_that_is_a_symlink_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let locks = LockDir::new(root.path());
        let target = outside.path().join("victim");
        std::os::unix::fs::symlink(&target, locks.path("x")).unwrap();
        let error = locks.try_lock("x", LockMode::Shared).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert!(!target.exists(), "nothing was created through the link");
    }

    #[test]
    fn a_wait_can_be_cancelled() {
        let root = tempfile::tempdir().unwrap();
        let locks = LockDir::new(root.path());
        let _holder = locks.try_lock("x", LockMode::Shared).unwrap().unwrap();
        let error = locks
            .lock("x", LockMode::Exclusive, || {}, || true)
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::Interrupted);
    }
}
