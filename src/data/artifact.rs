//! Compact artifact files for cached data stages.
//!
//! An image set is one binary file: the magic `GPLIMG01`, a little-endian u64 header length,
//! a JSON header (shape, count, class names), the labels as little-endian u32, then the raw
//! NHWC uint8 pixels. Loading reads straight into the final buffers. Index artifacts (splits,
//! folds, balanced indices, class mappings) are JSON. Every write is atomic.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;

use super::{DataError, ImageSet};

const MAGIC: &[u8; 8] = b"GPLIMG01";

#[derive(Serialize, Deserialize)]
struct Header {
    len: usize,
    height: usize,
    width: usize,
    channels: usize,
    class_names: Vec<String>,
}

/// Writes `path` through a temp file in the same directory and a rename.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), DataError> {
    crate::fsutil::write_atomic_with(path, write).map_err(|e| DataError::io(path, e))
}

pub fn save_image_set(set: &ImageSet, path: impl AsRef<Path>) -> Result<(), DataError> {
    let header = Header {
        len: set.len(),
        height: set.height,
        width: set.width,
        channels: set.channels,
        class_names: set.class_names.clone(),
    };
    let json = serde_json::to_vec(&header)
        .map_err(|e| DataError::invalid("image set header", e.to_string()))?;
    write_atomic(path.as_ref(), |out| {
        out.write_all(MAGIC)?;
        out.write_all(&(json.len() as u64).to_le_bytes())?;
        out.write_all(&json)?;
        let labels: Vec<u8> = set.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
        out.write_all(&labels)?;
        out.write_all(&set.images)
    })
}

pub fn load_image_set(path: impl AsRef<Path>) -> Result<ImageSet, DataError> {
    let path = path.as_ref();
    let bad = |detail: &str| DataError::BadArtifact {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut fixed = [0u8; 16];
    file.read_exact(&mut fixed)
        .map_err(|_| bad("shorter than its header"))?;
    if &fixed[..8] != MAGIC {
        return Err(bad("wrong magic"));
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&fixed[8..]);
    let header_len = u64::from_le_bytes(len8);
    if header_len > file_len {
        return Err(bad("header length beyond the end of the file"));
    }
    let mut json = vec![0u8; header_len as usize];
    file.read_exact(&mut json)
        .map_err(|_| bad("truncated header"))?;
    let header: Header = serde_json::from_slice(&json).map_err(|e| bad(&format!("header: {e}")))?;
    let pixels = header
        .len
        .checked_mul(header.height * header.width * header.channels)
        .ok_or_else(|| bad("size overflow"))?;
    let expected = 16 + header_len + 4 * header.len as u64 + pixels as u64;
    if file_len != expected {
        return Err(bad(&format!("{file_len} bytes, expected {expected}")));
    }
    let mut raw_labels = vec![0u8; 4 * header.len];
    file.read_exact(&mut raw_labels)
        .map_err(|e| DataError::io(path, e))?;
    let labels: Vec<u32> = raw_labels
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if labels
        .iter()
        .any(|&l| l as usize >= header.class_names.len())
    {
        return Err(bad("label outside the class list"));
    }
    let mut images = vec![0u8; pixels];
    file.read_exact(&mut images)
        .map_err(|e| DataError::io(path, e))?;
    Ok(ImageSet {
        height: header.height,
        width: header.width,
        channels: header.channels,
        images,
        labels,
        class_names: header.class_names,
    })
}

pub fn save_json<T: Serialize>(value: &T, path: impl AsRef<Path>) -> Result<(), DataError> {
    let text =
        serde_json::to_vec(value).map_err(|e| DataError::invalid("artifact", e.to_string()))?;
    write_atomic(path.as_ref(), |out| out.write_all(&text))
}

pub fn load_json<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T, DataError> {
    let path = path.as_ref();
    let text = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_slice(&text).map_err(|e| DataError::BadArtifact {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_set_round_trips_and_damage_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.gplimg");
        let set = ImageSet {
            height: 2,
            width: 3,
            channels: 1,
            images: (0..12).collect(),
            labels: vec![1, 0],
            class_names: vec!["a".into(), "b".into()],
        };
        save_image_set(&set, &path).unwrap();
        assert_eq!(load_image_set(&path).unwrap(), set);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(
            load_image_set(&path),
            Err(DataError::BadArtifact { .. })
        ));
        std::fs::write(&path, b"nonsense").unwrap();
        assert!(matches!(
            load_image_set(&path),
            Err(DataError::BadArtifact { .. })
        ));
    }
}
