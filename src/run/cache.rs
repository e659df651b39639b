//! The content-addressed cache: `.gpl/cache/<fingerprint>/` holds `out/` (the stage's
//! artifacts; `out/public/` is mirrored to `runs/<pipeline>/<stage>/`) and `manifest.json`.
//!
//! Commit protocol: the executor writes into `.gpl/cache/<fp>.tmp-<pid>-<suffix>/out/`; the
//! runner hashes and fsyncs every file, writes the manifest last, fsyncs, and renames the
//! folder into place. An entry is therefore either whole or absent; a killed run leaves only
//! a `.tmp-` folder, which the next run removes. A later run trusts an entry only if its
//! manifest parses and every output's size matches; outputs whose mtime differs from the
//! manifest's (or all of them, with `--verify`) are re-hashed.
//!
//! Concurrent runs (other processes, other machines on a shared filesystem) meet through one
//! lock per entry (`super::lock`, `.gpl/locks/<fp>.lock`): shared while a run reads the entry,
//! exclusive while one process computes, replaces or removes it. Temp folders, scratch folders
//! and entries are removed only under their entry's exclusive lock, so `clean`, `gc` and the
//! leftover sweep never touch what a live process holds.

use super::lock::{FileLock, LockDir, LockMode};
use crate::plan::fingerprint::{hash_file, mtime_ns, output_digest, unique_suffix, write_atomic};
use crate::plan::{ContentHash, Fingerprint, StageId};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const OUT_DIR: &str = "out";
pub const PUBLIC_DIR: &str = "public";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestInput {
    pub stage: StageId,
    pub fingerprint: Fingerprint,
    pub output_digest: ContentHash,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRead {
    pub path: PathBuf,
    pub hash: ContentHash,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Relative to `out/`, with `/` separators.
    pub path: String,
    pub hash: ContentHash,
    pub size: u64,
    pub mtime_ns: u64,
}

/// What a cache entry says about itself. Written last, so its presence means "complete".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub stage: StageId,
    pub kind: String,
    pub fingerprint: Fingerprint,
    pub inputs: Vec<ManifestInput>,
    pub files_read: Vec<FileRead>,
    pub outputs: Vec<OutputFile>,
    pub output_digest: ContentHash,
    pub seconds: f64,
    pub gpl_version: String,
    pub created_unix: u64,
}

/// The manifest fields the runner knows before the outputs are hashed.
#[derive(Clone, Debug)]
pub struct CommitInfo {
    pub stage: StageId,
    pub kind: String,
    pub inputs: Vec<ManifestInput>,
    pub files_read: Vec<FileRead>,
    pub seconds: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Sizes always; hashes only of files whose mtime differs from the manifest's.
    Quick,
    /// Every output re-hashed.
    Full,
}

#[derive(Debug)]
pub enum Lookup {
    Hit(Manifest),
    Miss,
    /// An entry exists but cannot be trusted; the reason is for the warning.
    Invalid(String),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    pub entries_removed: usize,
    pub scratch_removed: usize,
    pub bytes_freed: u64,
    /// Entries, temp and scratch folders kept because another process holds their lock.
    pub in_use: usize,
}

/// `.gpl/` of one project.
#[derive(Clone, Debug)]
pub struct CacheStore {
    gpl_dir: PathBuf,
    locks: LockDir,
}

impl CacheStore {
    /// Opens (creating if needed) `<project_root>/.gpl/{cache,scratch}`; refuses when one
    /// of them is a symlink leading out of the project.
    pub fn open(project_root: &Path) -> io::Result<CacheStore> {
        let gpl_dir = project_root.join(".gpl");
        let store = CacheStore {
            locks: LockDir::new(gpl_dir.join("locks")),
            gpl_dir,
        };
        for part in ["cache", "scratch", "locks"] {
            crate::fsutil::confined_dir(project_root, &Path::new(".gpl").join(part))?;
        }
        Ok(store)
    }

    pub fn gpl_dir(&self) -> &Path {
        &self.gpl_dir
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.gpl_dir.join("cache")
    }

    fn scratch_root(&self) -> PathBuf {
        self.gpl_dir.join("scratch")
    }

    pub fn entry_dir(&self, fp: &Fingerprint) -> PathBuf {
        self.cache_dir().join(fp.as_str())
    }

    /// The artifacts of a committed entry (what `StageContext::input_dir` hands out).
    pub fn out_dir(&self, fp: &Fingerprint) -> PathBuf {
        self.entry_dir(fp).join(OUT_DIR)
    }

    /// Per-fingerprint scratch space that survives a killed run (checkpoints to resume from).
    pub fn scratch_dir(&self, fp: &Fingerprint) -> PathBuf {
        self.scratch_root().join(fp.as_str())
    }

    /// Takes the lock of `fp`'s entry, waiting while another process holds it in a conflicting
    /// mode (see [`LockDir::lock`] for `waiting` and `cancelled`).
    pub fn lock_entry(
        &self,
        fp: &Fingerprint,
        mode: LockMode,
        waiting: impl FnOnce(),
        cancelled: impl Fn() -> bool,
    ) -> io::Result<FileLock> {
        self.locks.lock(fp.as_str(), mode, waiting, cancelled)
    }

    /// The lock of `fp`'s entry if nobody holds it in a conflicting mode.
    pub fn try_lock_entry(&self, fp: &Fingerprint, mode: LockMode) -> io::Result<Option<FileLock>> {
        self.locks.try_lock(fp.as_str(), mode)
    }

    /// The lock on publishing into `runs/...` folder `relative` (to the project root): two
    /// processes mirroring one stage folder take turns, so each leaves a whole copy and a
    /// record that matches it.
    pub fn lock_publish(&self, relative: &Path) -> io::Result<FileLock> {
        let hash = blake3::hash(relative.to_string_lossy().as_bytes());
        let name = format!("publish-{}", &hash.to_hex()[..16]);
        self.locks.lock(&name, LockMode::Exclusive, || {}, || false)
    }

    /// Removes `.tmp-`/`.old-` folders that no live process is writing. Returns how many.
    /// The process that made one holds its entry's exclusive lock until it commits or drops
    /// it, so a free lock means its maker is gone (killed, or on another machine that died).
    pub fn remove_stale_temps(&self) -> io::Result<usize> {
        let mut removed = 0;
        for item in fs::read_dir(self.cache_dir())? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            let Some((fp, pid)) = leftover(&name) else {
                continue;
            };
            if pid == std::process::id() {
                continue;
            }
            let Some(lock) = self.try_lock_entry(&fp, LockMode::Exclusive)? else {
                continue;
            };
            remove_path(&item.path())?;
            drop(lock);
            removed += 1;
        }
        Ok(removed)
    }

    /// Finds and checks the entry for `fp`.
    pub fn lookup(&self, fp: &Fingerprint, verify: Verify) -> Lookup {
        let dir = self.entry_dir(fp);
        if !dir.exists() {
            return Lookup::Miss;
        }
        let manifest = match fs::read(dir.join(MANIFEST_FILE)) {
            Ok(bytes) => match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) => m,
                Err(e) => return Lookup::Invalid(format!("its manifest does not parse ({e})")),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Lookup::Invalid("it has no manifest".to_string());
            }
            Err(e) => return Lookup::Invalid(format!("its manifest cannot be read ({e})")),
        };
        match verify_entry(&dir.join(OUT_DIR), fp, &manifest, verify) {
            Ok(()) => Lookup::Hit(manifest),
            Err(reason) => Lookup::Invalid(reason),
        }
    }

    pub fn remove_entry(&self, fp: &Fingerprint) -> io::Result<()> {
        let dir = self.entry_dir(fp);
        if !dir.exists() {
            return Ok(());
        }
        // Move aside first so a half-deleted entry never sits under the trusted name.
        let aside = self.cache_dir().join(format!(
            "{fp}.old-{}-{}",
            std::process::id(),
            unique_suffix()
        ));
        fs::rename(&dir, &aside)?;
        remove_path(&aside)
    }

    /// A fresh temp folder for a stage's outputs.
    pub fn begin(&self, fp: &Fingerprint) -> io::Result<PendingEntry> {
        let dir = self.cache_dir().join(format!(
            "{fp}.tmp-{}-{}",
            std::process::id(),
            unique_suffix()
        ));
        fs::create_dir_all(dir.join(OUT_DIR).join(PUBLIC_DIR))?;
        Ok(PendingEntry {
            fingerprint: fp.clone(),
            dir,
            committed: false,
        })
    }

    /// Hashes and fsyncs the outputs, writes the manifest, and renames the folder into place
    /// (replacing an existing entry for the same fingerprint, as `--from` does).
    pub fn commit(&self, mut pending: PendingEntry, info: CommitInfo) -> io::Result<Manifest> {
        let out = pending.out_dir();
        let mut outputs = Vec::new();
        let mut dirs = vec![out.clone()];
        collect_outputs(&out, &out, &mut outputs, &mut dirs)?;
        for dir in &dirs {
            sync_dir(dir)?;
        }
        let digest = output_digest(
            outputs
                .iter()
                .map(|o: &OutputFile| (o.path.as_str(), &o.hash)),
        );
        let manifest = Manifest {
            stage: info.stage,
            kind: info.kind,
            fingerprint: pending.fingerprint.clone(),
            inputs: info.inputs,
            files_read: info.files_read,
            outputs,
            output_digest: digest,
            seconds: info.seconds,
            gpl_version: crate::plan::fingerprint::ENGINE_VERSION.to_string(),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
        write_atomic(&pending.dir.join(MANIFEST_FILE), &bytes)?;
        sync_dir(&pending.dir)?;

        let target = self.entry_dir(&pending.fingerprint);
        if fs::rename(&pending.dir, &target).is_err() {
            // The target exists: a forced re-run replaces it (under the entry's exclusive lock,
            // so no other process is reading it).
            self.remove_entry(&pending.fingerprint)?;
            fs::rename(&pending.dir, &target)?;
        }
        pending.committed = true;
        sync_dir(&self.cache_dir())?;
        Ok(manifest)
    }

    /// Fingerprints of the committed entries (whether valid or not).
    pub fn entries(&self) -> io::Result<Vec<Fingerprint>> {
        let mut out = Vec::new();
        for item in fs::read_dir(self.cache_dir())? {
            if let Some(fp) = Fingerprint::parse(&item?.file_name().to_string_lossy()) {
                out.push(fp);
            }
        }
        out.sort();
        Ok(out)
    }

    /// `gpl clean`: everything under `.gpl/cache` and `.gpl/scratch` that no other process
    /// holds.
    pub fn clean_all(&self) -> io::Result<CleanReport> {
        self.clean_where(|_| false)
    }

    /// `gpl clean --gc`: entries (and scratch folders) whose fingerprint is not live and that
    /// no other process holds. Leftover temp folders of dead processes go too.
    pub fn gc(&self, live: &HashSet<Fingerprint>) -> io::Result<CleanReport> {
        self.remove_stale_temps()?;
        self.clean_where(|fp| live.contains(fp))
    }

    /// Removes every entry, temp and scratch folder whose fingerprint `keep` refuses, each
    /// under its entry's exclusive lock, and the lock files nobody holds. Names that carry no
    /// fingerprint were not written by gpl's cache and go too.
    fn clean_where(&self, keep: impl Fn(&Fingerprint) -> bool) -> io::Result<CleanReport> {
        let mut report = CleanReport::default();
        for (root, is_cache) in [(self.cache_dir(), true), (self.scratch_root(), false)] {
            let Ok(items) = fs::read_dir(&root) else {
                continue;
            };
            for item in items {
                let item = item?;
                let name = item.file_name().to_string_lossy().into_owned();
                let owner = Fingerprint::parse(&name).or_else(|| leftover(&name).map(|l| l.0));
                let lock = match &owner {
                    Some(fp) if keep(fp) => continue,
                    Some(fp) => match self.try_lock_entry(fp, LockMode::Exclusive)? {
                        Some(lock) => Some(lock),
                        None => {
                            report.in_use += 1;
                            continue;
                        }
                    },
                    None => None,
                };
                report.bytes_freed += size_of_tree(&item.path());
                remove_path(&item.path())?;
                drop(lock);
                if is_cache {
                    report.entries_removed += 1;
                } else {
                    report.scratch_removed += 1;
                }
            }
        }
        for name in self.locks.names()? {
            if Fingerprint::parse(&name).is_some_and(|fp| keep(&fp)) {
                continue;
            }
            if let Some(lock) = self.locks.try_lock(&name, LockMode::Exclusive)? {
                lock.remove()?;
            }
        }
        Ok(report)
    }
}

/// A stage's outputs being written. Dropping it without committing removes the folder.
#[derive(Debug)]
pub struct PendingEntry {
    fingerprint: Fingerprint,
    dir: PathBuf,
    committed: bool,
}

impl PendingEntry {
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join(OUT_DIR)
    }

    pub fn public_dir(&self) -> PathBuf {
        self.dir.join(OUT_DIR).join(PUBLIC_DIR)
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn verify_entry(
    out: &Path,
    fp: &Fingerprint,
    manifest: &Manifest,
    verify: Verify,
) -> Result<(), String> {
    if &manifest.fingerprint != fp {
        return Err(format!(
            "its manifest names fingerprint {}",
            manifest.fingerprint.short()
        ));
    }
    let digest = output_digest(manifest.outputs.iter().map(|o| (o.path.as_str(), &o.hash)));
    if digest != manifest.output_digest {
        return Err("its manifest's output digest does not match its outputs".to_string());
    }
    for output in &manifest.outputs {
        let relative = safe_relative(&output.path)
            .ok_or_else(|| format!("its manifest lists a bad path '{}'", output.path))?;
        let path = out.join(relative);
        let meta =
            fs::metadata(&path).map_err(|_| format!("output '{}' is missing", output.path))?;
        if meta.len() != output.size {
            return Err(format!(
                "output '{}' has {} bytes, the manifest says {}",
                output.path,
                meta.len(),
                output.size
            ));
        }
        if verify == Verify::Full || mtime_ns(&meta) != output.mtime_ns {
            let hash = hash_file(&path)
                .map_err(|e| format!("output '{}' cannot be read ({e})", output.path))?;
            if hash != output.hash {
                return Err(format!(
                    "output '{}' does not match its hash (corrupted)",
                    output.path
                ));
            }
        }
    }
    Ok(())
}

/// A manifest path as a relative path that stays inside `out/`.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    p.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| p.to_path_buf())
}

fn collect_outputs(
    root: &Path,
    dir: &Path,
    outputs: &mut Vec<OutputFile>,
    dirs: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let mut items: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    items.sort_by_key(|i| i.file_name());
    for item in items {
        let path = item.path();
        let kind = item.file_type()?;
        if kind.is_dir() {
            dirs.push(path.clone());
            collect_outputs(root, &path, outputs, dirs)?;
        } else if kind.is_file() {
            let file = fs::File::open(&path)?;
            file.sync_all()?;
            let hash = hash_file(&path)?;
            let meta = file.metadata()?;
            let relative = path.strip_prefix(root).map_err(io::Error::other)?;
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            outputs.push(OutputFile {
                path: parts.join("/"),
                hash,
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
            });
        } else {
            return Err(io::Error::other(format!(
                "output {} is neither a file nor a folder (links are not cached)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The record of what gpl wrote into a `runs/` folder: the entry it mirrors (so a same-size
/// change is still copied) and every file it put there, so later runs delete only those.
const MIRROR_MARKER: &str = ".gpl-entry";

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct MirrorRecord {
    entry: String,
    /// Paths relative to the folder, `/`-separated, sorted.
    files: Vec<String>,
}

/// Copies the entry's `out/public/` files into `dest` (a folder the caller has checked with
/// [`crate::fsutil::confined_dir`]) and removes the files a previous mirror wrote there that
/// the entry no longer has. Files gpl did not write (a user's notes) are never touched, and
/// no subfolder that is a symlink leading out of `dest` is written or deleted through. When
/// `dest` already mirrors this entry only missing or resized files are copied. Returns the
/// number of files copied.
pub fn mirror_public(entry_out: &Path, manifest: &Manifest, dest: &Path) -> io::Result<usize> {
    let marker = dest.join(MIRROR_MARKER);
    // A marker from before the record (a bare fingerprint) or none: nothing known written.
    let previous: MirrorRecord = fs::read(&marker)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let same_entry = previous.entry == manifest.fingerprint.as_str();
    let prefix = format!("{PUBLIC_DIR}/");
    let mut files = Vec::new();
    let mut copied = 0;
    for output in &manifest.outputs {
        let Some(relative) = output.path.strip_prefix(&prefix) else {
            continue;
        };
        let Some(relative_path) = safe_relative(relative) else {
            continue;
        };
        let (Some(parent), Some(name)) = (relative_path.parent(), relative_path.file_name()) else {
            continue;
        };
        let target = crate::fsutil::confined_dir(dest, parent)?.join(name);
        files.push(relative.to_string());
        if same_entry && fs::metadata(&target).is_ok_and(|m| m.len() == output.size) {
            continue;
        }
        // The rename replaces whatever sits at `target` (a symlink included) without
        // following it.
        let temp = crate::fsutil::temp_beside(&target);
        fs::copy(entry_out.join(&prefix).join(&relative_path), &temp)?;
        if let Err(e) = fs::rename(&temp, &target) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        copied += 1;
    }
    files.sort();
    for old in previous
        .files
        .iter()
        .filter(|f| files.binary_search(f).is_err())
    {
        remove_written(dest, old)?;
    }
    let record = MirrorRecord {
        entry: manifest.fingerprint.as_str().to_string(),
        files,
    };
    if record != previous {
        let bytes = serde_json::to_vec_pretty(&record).map_err(io::Error::other)?;
        write_atomic(&marker, &bytes)?;
    }
    Ok(copied)
}

/// Removes one file a previous mirror wrote (the link itself when it is now a symlink),
/// then its folders inside `dest` that this left empty.
fn remove_written(dest: &Path, relative: &str) -> io::Result<()> {
    let Some(relative) = safe_relative(relative) else {
        return Ok(());
    };
    let (Some(parent), Some(name)) = (relative.parent(), relative.file_name()) else {
        return Ok(());
    };
    let Some(dir) = crate::fsutil::existing_confined_dir(dest, parent)? else {
        return Ok(());
    };
    let path = dir.join(name);
    match fs::symlink_metadata(&path) {
        Ok(meta) if !meta.is_dir() => fs::remove_file(&path)?,
        _ => return Ok(()),
    }
    for folder in parent.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        // Only empty folders go; a folder holding anything else (a user's file) stays.
        if fs::remove_dir(dest.join(folder)).is_err() {
            break;
        }
    }
    Ok(())
}

/// `<fp>.tmp-<pid>-<suffix>` or `<fp>.old-<pid>-<suffix>` → (fp, pid).
fn leftover(name: &str) -> Option<(Fingerprint, u32)> {
    let (fp, rest) = name
        .split_once(".tmp-")
        .or_else(|| name.split_once(".old-"))?;
    Some((
        Fingerprint::parse(fp)?,
        rest.split('-').next()?.parse().ok()?,
    ))
}

fn remove_path(path: &Path) -> io::Result<()> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn size_of_tree(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|items| items.flatten().map(|i| size_of_tree(&i.path())).sum())
        .unwrap_or(0)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    // Directories can be opened and fsynced on Unix; elsewhere this is best effort.
    match fs::File::open(dir) {
        Ok(handle) => match handle.sync_all() {
            Ok(()) => Ok(()),
            Err(_) if cfg!(not(unix)) => Ok(()),
            Err(e) => Err(e),
        },
        Err(_) if cfg!(not(unix)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::from_hash(blake3::hash(&[n]))
    }

    fn commit(store: &CacheStore, fp: &Fingerprint, content: &[u8]) -> Manifest {
        let pending = store.begin(fp).unwrap();
        fs::write(pending.out_dir().join("model.bin"), content).unwrap();
        fs::write(pending.public_dir().join("metrics.yaml"), b"acc: 1\n").unwrap();
        let info = CommitInfo {
            stage: "s".into(),
            kind: "toy".into(),
            inputs: vec![],
            files_read: vec![],
            seconds: 0.5,
        };
        store.commit(pending, info).unwrap()
    }

    #[test]
    fn committed_entries_verify_and_damage_is_detected() {
        let root = tempfile::tempdir().unwrap();
        let store = CacheStore::open(root.path()).unwrap();
        assert!(matches!(store.lookup(&fp(1), Verify::Quick), Lookup::Miss));
        let manifest = commit(&store, &fp(1), b"weights");
        assert_eq!(manifest.outputs.len(), 2);
        assert!(matches!(store.lookup(&fp(1), Verify::Full), Lookup::Hit(_)));

        let file = store.out_dir(&fp(1)).join("model.bin");
        fs::write(&file, b"weighTs").unwrap();
        let Lookup::Invalid(reason) = store.lookup(&fp(1), Verify::Quick) else {
            panic!("corruption not seen")
        };
        assert!(reason.contains("model.bin"), "{reason}");
        fs::write(&file, b"wei").unwrap();
        let Lookup::Invalid(reason) = store.lookup(&fp(1), Verify::Quick) else {
            panic!("truncation not seen")
        };
        assert!(reason.contains("3 bytes"), "{reason}");
        fs::remove_file(store.entry_dir(&fp(1)).join(MANIFEST_FILE)).unwrap();
        assert!(matches!(
            store.lookup(&fp(1), Verify::Quick),
            Lookup::Invalid(_)
        ));
    }

    #[test]
    fn uncommitted_entries_vanish_and_gc_keeps_live_ones() {
        let root = tempfile::tempdir().unwrap();
        let store = CacheStore::open(root.path()).unwrap();
        {
            let pending = store.begin(&fp(9)).unwrap();
            fs::write(pending.out_dir().join("half"), b"x").unwrap();
        }
        assert_eq!(fs::read_dir(store.cache_dir()).unwrap().count(), 0);
        // A temp folder of a process that no longer exists (pid beyond the kernel's maximum).
        fs::create_dir_all(
            store
                .cache_dir()
                .join(format!("{}.tmp-4294967294-1", fp(3))),
        )
        .unwrap();
        assert_eq!(store.remove_stale_temps().unwrap(), 1);

        commit(&store, &fp(1), b"a");
        commit(&store, &fp(2), b"b");
        fs::create_dir_all(store.scratch_dir(&fp(2))).unwrap();
        let live: HashSet<Fingerprint> = [fp(1)].into_iter().collect();
        let report = store.gc(&live).unwrap();
        assert_eq!((report.entries_removed, report.scratch_removed), (1, 1));
        assert_eq!(store.entries().unwrap(), vec![fp(1)]);
        store.clean_all().unwrap();
        assert!(store.entries().unwrap().is_empty());
    }

    #[test]
    fn clean_and_gc_keep_what_another_holder_has_locked() {
        let root = tempfile::tempdir().unwrap();
        let store = CacheStore::open(root.path()).unwrap();
        commit(&store, &fp(1), b"read by a run");
        commit(&store, &fp(2), b"free");
        // A run reading entry 1, and a process computing entry 3 into its temp folder.
        let reader = store
            .try_lock_entry(&fp(1), LockMode::Shared)
            .unwrap()
            .unwrap();
        let writer = store
            .try_lock_entry(&fp(3), LockMode::Exclusive)
            .unwrap()
            .unwrap();
        let temp = store.cache_dir().join(format!("{}.tmp-1-1", fp(3)));
        fs::create_dir_all(&temp).unwrap();
        fs::create_dir_all(store.scratch_dir(&fp(3))).unwrap();
        assert_eq!(store.remove_stale_temps().unwrap(), 0, "its maker is alive");

        let report = store.gc(&HashSet::new()).unwrap();
        assert_eq!(
            (report.entries_removed, report.in_use),
            (1, 3),
            "{report:?}"
        );
        assert_eq!(store.entries().unwrap(), vec![fp(1)]);
        assert!(temp.exists() && store.scratch_dir(&fp(3)).exists());
        let report = store.clean_all().unwrap();
        assert_eq!(
            (report.entries_removed, report.in_use),
            (0, 3),
            "{report:?}"
        );

        drop((reader, writer));
        assert_eq!(store.remove_stale_temps().unwrap(), 1, "its maker is gone");
        let report = store.clean_all().unwrap();
        assert_eq!(
            (report.entries_removed, report.in_use),
            (1, 0),
            "{report:?}"
        );
        assert_eq!(fs::read_dir(store.cache_dir()).unwrap().count(), 0);
        assert_eq!(
            fs::read_dir(root.path().join(".gpl/scratch"))
                .unwrap()
                .count(),
            0
        );
        assert!(
            LockDir::new(root.path().join(".gpl/locks"))
                .names()
                .unwrap()
                .is_empty(),
            "lock files nobody holds go too"
        );
    }

    #[test]
    fn publishers_of_one_folder_take_turns_and_leave_one_entry_whole() {
        let root = tempfile::tempdir().unwrap();
        let store = CacheStore::open(root.path()).unwrap();
        // Two entries with a file in common and one of their own each.
        let entry = |n: u8, own: &str| {
            let pending = store.begin(&fp(n)).unwrap();
            fs::write(pending.public_dir().join(own), [n; 4096]).unwrap();
            fs::write(pending.public_dir().join("common.bin"), [n; 8192]).unwrap();
            let info = CommitInfo {
                stage: "s".into(),
                kind: "toy".into(),
                inputs: vec![],
                files_read: vec![],
                seconds: 0.1,
            };
            store.commit(pending, info).unwrap()
        };
        let manifests = [entry(1, "one.bin"), entry(2, "two.bin")];
        let relative = Path::new("runs/p/s");
        let dest = crate::fsutil::confined_dir(root.path(), relative).unwrap();
        std::thread::scope(|scope| {
            for manifest in &manifests {
                let (store, dest) = (&store, &dest);
                scope.spawn(move || {
                    for _ in 0..30 {
                        let _turn = store.lock_publish(relative).unwrap();
                        mirror_public(&store.out_dir(&manifest.fingerprint), manifest, dest)
                            .unwrap();
                        // Inside the turn: exactly this entry's files, with its bytes.
                        let mut present: Vec<String> = fs::read_dir(dest)
                            .unwrap()
                            .map(|i| i.unwrap().file_name().to_string_lossy().into_owned())
                            .filter(|name| name != MIRROR_MARKER)
                            .collect();
                        present.sort();
                        let record: MirrorRecord =
                            serde_json::from_slice(&fs::read(dest.join(MIRROR_MARKER)).unwrap())
                                .unwrap();
                        assert_eq!(record.entry, manifest.fingerprint.as_str());
                        assert_eq!(present, record.files);
                        let byte = fs::read(dest.join("common.bin")).unwrap()[0];
                        assert_eq!(fp(byte), manifest.fingerprint);
                    }
                });
            }
        });
    }

    #[test]
    fn mirror_copies_public_files_and_removes_only_what_it_wrote() {
        let root = tempfile::tempdir().unwrap();
        let store = CacheStore::open(root.path()).unwrap();
        let manifest = commit(&store, &fp(1), b"a");
        let dest = root.path().join("runs/p/s");
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("notes.txt"), b"mine").unwrap();
        assert_eq!(
            mirror_public(&store.out_dir(&fp(1)), &manifest, &dest).unwrap(),
            1
        );
        assert_eq!(fs::read(dest.join("metrics.yaml")).unwrap(), b"acc: 1\n");
        assert_eq!(
            mirror_public(&store.out_dir(&fp(1)), &manifest, &dest).unwrap(),
            0
        );
        // A same-size difference is copied when the folder mirrors another entry.
        let other = commit(&store, &fp(2), b"b");
        fs::write(dest.join("metrics.yaml"), b"acc: 9\n").unwrap();
        assert_eq!(
            mirror_public(&store.out_dir(&fp(2)), &other, &dest).unwrap(),
            1
        );
        assert_eq!(fs::read(dest.join("metrics.yaml")).unwrap(), b"acc: 1\n");
        // An entry without the file: the copy gpl wrote goes, the user's file stays.
        let pending = store.begin(&fp(3)).unwrap();
        fs::create_dir_all(pending.public_dir().join("figures")).unwrap();
        fs::write(pending.public_dir().join("figures/a.png"), b"png").unwrap();
        let info = CommitInfo {
            stage: "s".into(),
            kind: "toy".into(),
            inputs: vec![],
            files_read: vec![],
            seconds: 0.1,
        };
        let third = store.commit(pending, info).unwrap();
        mirror_public(&store.out_dir(&fp(3)), &third, &dest).unwrap();
        assert!(!dest.join("metrics.yaml").exists());
        assert!(dest.join("figures/a.png").exists());
        assert_eq!(fs::read(dest.join("notes.txt")).unwrap(), b"mine");
        mirror_public(&store.out_dir(&fp(1)), &manifest, &dest).unwrap();
        assert!(!dest.join("figures").exists(), "the emptied folder goes");
        assert_eq!(fs::read(dest.join("notes.txt")).unwrap(), b"mine");
    }
}
