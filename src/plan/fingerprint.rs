//! Fingerprints: the BLAKE3 key a stage's cache entry is stored under, canonical JSON, and
//! content hashes of the files stages read (memoised by path, size and mtime in
//! `.gpl/filehash.json` so that a fully cached plan does not re-read gigabytes of HDF5).

use super::spec::{StageId, StageSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The engine version that goes into every fingerprint: a new gpl recomputes everything.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Bumped when the fingerprint document changes shape.
const FINGERPRINT_DOMAIN: &str = "gpl-stage-fingerprint-v1";

/// The key of a stage's cache entry: BLAKE3 hex of the stage's fingerprint document.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

/// BLAKE3 hex of some bytes: a file read, one output file, or a stage's whole output
/// (the output digest, a hash over its output files' paths and hashes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentHash(String);

macro_rules! hex_key {
    ($t:ident) => {
        impl $t {
            pub fn from_hash(hash: blake3::Hash) -> Self {
                $t(hash.to_hex().to_string())
            }

            /// Accepts exactly 64 lowercase hex digits (what a cache folder name must be).
            pub fn parse(text: &str) -> Option<Self> {
                let ok = text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                ok.then(|| $t(text.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The first 12 hex digits, for tables and logs.
            pub fn short(&self) -> &str {
                &self.0[..12.min(self.0.len())]
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
hex_key!(Fingerprint);
hex_key!(ContentHash);

/// JSON with object keys sorted and no whitespace. Written by hand rather than trusting
/// `serde_json::Value`'s map order, which becomes insertion order as soon as any crate in the
/// build enables serde_json's `preserve_order` feature.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            out.push_str(&value.to_string());
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
    }
}

/// A stage's fingerprint from its spec, its inputs' output digests (in `spec.inputs` order)
/// and the content hashes of the files it reads (in `spec.files` order).
///
/// The stage id is included: executors may write it into their artifacts (report titles,
/// file names), so two stages with the same config are not assumed interchangeable.
pub fn stage_fingerprint(
    spec: &StageSpec,
    input_digests: &[(StageId, ContentHash)],
    file_hashes: &[(PathBuf, ContentHash)],
) -> Fingerprint {
    let document = serde_json::json!({
        "domain": FINGERPRINT_DOMAIN,
        "engine": ENGINE_VERSION,
        "id": spec.id.as_str(),
        "kind": spec.kind,
        "config": spec.config,
        "inputs": input_digests
            .iter()
            .map(|(id, digest)| serde_json::json!([id.as_str(), digest.as_str()]))
            .collect::<Vec<_>>(),
        "files": file_hashes
            .iter()
            .map(|(path, hash)| serde_json::json!([path.to_string_lossy(), hash.as_str()]))
            .collect::<Vec<_>>(),
        "seed": spec.seed,
    });
    Fingerprint::from_hash(blake3::hash(canonical_json(&document).as_bytes()))
}

/// The digest of a stage's whole output: its files' relative paths (with `/`) and hashes,
/// sorted by path. Two runs that wrote the same bytes under the same names agree.
pub fn output_digest<'a>(
    outputs: impl IntoIterator<Item = (&'a str, &'a ContentHash)>,
) -> ContentHash {
    let mut entries: Vec<(&str, &ContentHash)> = outputs.into_iter().collect();
    entries.sort();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"gpl-output-digest-v1\n");
    for (path, hash) in entries {
        hasher.update(path.as_bytes());
        hasher.update(b"\0");
        hasher.update(hash.as_str().as_bytes());
        hasher.update(b"\n");
    }
    ContentHash::from_hash(hasher.finalize())
}

/// BLAKE3 of a file's content, streamed.
pub fn hash_file(path: &Path) -> io::Result<ContentHash> {
    let mut file = fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(ContentHash::from_hash(hasher.finalize()))
}

/// Nanoseconds since the epoch of a file's mtime (0 when the platform has none).
pub fn mtime_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FileHashEntry {
    size: u64,
    mtime_ns: u64,
    hash: ContentHash,
}

/// A file whose mtime is this recent may still be written within the same mtime tick
/// (Linux stamps files from a coarse clock), so its hash is used but not remembered.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Content hashes of files read by stages, memoised by (absolute path, size, mtime).
#[derive(Debug, Default)]
pub struct FileHasher {
    store: Option<PathBuf>,
    entries: Mutex<BTreeMap<PathBuf, FileHashEntry>>,
    changed: Mutex<bool>,
}

impl FileHasher {
    /// A hasher that remembers nothing between processes.
    pub fn in_memory() -> Self {
        FileHasher::default()
    }

    /// Loads the memo from `store` (a missing or unreadable memo is an empty one: it is only
    /// a cache).
    pub fn load(store: &Path) -> Self {
        let entries = fs::read(store)
            .ok()
            .and_then(|bytes| {
                serde_json::from_slice::<BTreeMap<PathBuf, FileHashEntry>>(&bytes).ok()
            })
            .unwrap_or_default();
        FileHasher {
            store: Some(store.to_path_buf()),
            entries: Mutex::new(entries),
            changed: Mutex::new(false),
        }
    }

    /// The content hash of `path`, read only when its size or mtime changed since last time.
    /// A folder (an image-folder dataset) hashes to a digest of its entries' names and hashes.
    pub fn hash(&self, path: &Path) -> io::Result<ContentHash> {
        let absolute = fs::canonicalize(path)?;
        let meta = fs::metadata(&absolute)?;
        if meta.is_dir() {
            let mut entries = Vec::new();
            for item in fs::read_dir(&absolute)? {
                let item = item?;
                let name = item.file_name().to_string_lossy().into_owned();
                entries.push((name, self.hash(&item.path())?));
            }
            return Ok(output_digest(
                entries.iter().map(|(name, hash)| (name.as_str(), hash)),
            ));
        }
        let (size, mtime) = (meta.len(), mtime_ns(&meta));
        {
            let entries = lock(&self.entries);
            if let Some(entry) = entries.get(&absolute) {
                if entry.size == size && entry.mtime_ns == mtime {
                    return Ok(entry.hash.clone());
                }
            }
        }
        let hash = hash_file(&absolute)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        if now.saturating_sub(mtime) > RACY_WINDOW.as_nanos() as u64 {
            lock(&self.entries).insert(
                absolute,
                FileHashEntry {
                    size,
                    mtime_ns: mtime,
                    hash: hash.clone(),
                },
            );
            *lock(&self.changed) = true;
        }
        Ok(hash)
    }

    /// Writes the memo back (atomically) if anything new was learnt.
    pub fn save(&self) -> io::Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut changed = lock(&self.changed);
        if !*changed {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&*lock(&self.entries)).map_err(io::Error::other)?;
        write_atomic(store, &bytes)?;
        *changed = false;
        Ok(())
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every value guarded
/// here stays consistent between statements.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub use crate::fsutil::{unique_suffix, write_atomic};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2.5, "x"], "x": null}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a": {"x": null, "y": [1, 2.5, "x"]}, "b": 1}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,2.5,"x"]},"b":1}"#
        );
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    #[test]
    fn fingerprint_depends_on_each_part() {
        let spec = StageSpec::new("s", "toy", json!({"k": 1}));
        let base = stage_fingerprint(&spec, &[], &[]);
        assert_eq!(base, stage_fingerprint(&spec.clone(), &[], &[]));
        let digest = ContentHash::from_hash(blake3::hash(b"x"));
        let variants = [
            stage_fingerprint(&StageSpec::new("s", "toy", json!({"k": 2})), &[], &[]),
            stage_fingerprint(&StageSpec::new("t", "toy", json!({"k": 1})), &[], &[]),
            stage_fingerprint(&StageSpec::new("s", "other", json!({"k": 1})), &[], &[]),
            stage_fingerprint(&spec.clone().with_seed(3), &[], &[]),
            stage_fingerprint(&spec, &[(StageId::from("a"), digest.clone())], &[]),
            stage_fingerprint(&spec, &[], &[(PathBuf::from("f"), digest)]),
        ];
        for v in &variants {
            assert_ne!(&base, v);
        }
    }

    #[test]
    fn output_digest_ignores_listing_order() {
        let h1 = ContentHash::from_hash(blake3::hash(b"1"));
        let h2 = ContentHash::from_hash(blake3::hash(b"2"));
        assert_eq!(
            output_digest([("a", &h1), ("b", &h2)]),
            output_digest([("b", &h2), ("a", &h1)])
        );
        assert_ne!(
            output_digest([("a", &h1), ("b", &h2)]),
            output_digest([("a", &h2), ("b", &h1)])
        );
    }

    #[test]
    fn file_hasher_notices_content_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.bin");
        fs::write(&file, b"one").unwrap();
        let hasher = FileHasher::load(&dir.path().join("filehash.json"));
        let first = hasher.hash(&file).unwrap();
        fs::write(&file, b"two").unwrap();
        assert_ne!(first, hasher.hash(&file).unwrap());
        assert_eq!(hasher.hash(&file).unwrap(), hash_file(&file).unwrap());
    }

    #[test]
    fn folders_hash_by_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        fs::create_dir_all(images.join("spiral")).unwrap();
        fs::write(images.join("spiral/1.png"), b"png").unwrap();
        let hasher = FileHasher::in_memory();
        let first = hasher.hash(&images).unwrap();
        assert_eq!(first, hasher.hash(&images).unwrap());
        fs::write(images.join("spiral/2.png"), b"png").unwrap();
        let second = hasher.hash(&images).unwrap();
        assert_ne!(first, second);
        fs::rename(images.join("spiral/2.png"), images.join("spiral/3.png")).unwrap();
        assert_ne!(
            second,
            hasher.hash(&images).unwrap(),
            "names count, not only bytes"
        );
    }
}
