//! Galaxy10 HDF5 files (astroNN layout): load into an `ImageSet`, inspect, and write.
//!
//! SDSS `Galaxy10.h5`: `images` uint8 N×69×69×3, `ans` uint8 N. DECaLS `Galaxy10_DECals.h5`:
//! `images` uint8 N×256×256×3, `ans`, plus `ra`, `dec`, `redshift`, `pxscale`. libhdf5 reads
//! chunked, contiguous and gzip-compressed datasets alike. uint8 images are read straight into
//! the `ImageSet`'s buffer (peak memory 1× the image bytes); float images are read in their own
//! type, range-checked and converted (peak 1.25× for f32, 1.125× for f64).

use super::synth::{DECALS_CLASSES, SDSS_CLASSES};
use super::{DataError, ImageSet};
use ::hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The HDF5 signature; it may sit at byte 0, 512, 1024, ... when the file has a user block.
const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Galaxy10 (SDSS): 69×69 images.
    Sdss,
    /// Galaxy10 DECaLS: `ra`/`dec`/`redshift`/`pxscale` beside the images.
    Decals,
    /// Neither: class names are `class 0`, `class 1`, ...
    Other,
}

/// One dataset's description, as `gpl data inspect` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatasetInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub chunks: Option<Vec<usize>>,
    pub compressed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hdf5Summary {
    pub path: PathBuf,
    pub layout: Layout,
    pub datasets: Vec<DatasetInfo>,
    /// Count per label value of `ans`, when it exists and is an integer vector.
    pub class_counts: Option<Vec<(i64, usize)>>,
}

/// DECaLS per-image metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecalsMeta {
    pub ra: Vec<f64>,
    pub dec: Vec<f64>,
    pub redshift: Vec<f64>,
    pub pxscale: Vec<f64>,
}

fn h5_err(path: &Path, e: ::hdf5::Error) -> DataError {
    DataError::Hdf5 {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Opens an HDF5 file, telling a missing file, a non-HDF5 file and a truncated one apart.
pub fn open(path: &Path) -> Result<::hdf5::File, DataError> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut head = vec![0u8; len.min(8192) as usize];
    file.read_exact(&mut head)
        .map_err(|e| DataError::io(path, e))?;
    let has_signature = [0usize, 512, 1024, 2048, 4096]
        .iter()
        .any(|&at| head.get(at..at + 8) == Some(&SIGNATURE[..]));
    if !has_signature {
        return Err(DataError::NotHdf5 {
            path: path.to_path_buf(),
        });
    }
    // libhdf5 would print its error stack to stderr; our errors say it better.
    ::hdf5::silence_errors(true);
    ::hdf5::File::open(path).map_err(|e| {
        let detail = e.to_string();
        if detail.contains("truncated")
            || detail.contains("eof")
            || detail.contains("EOF")
            || detail.contains("end of file")
        {
            DataError::Truncated {
                path: path.to_path_buf(),
                detail,
            }
        } else {
            DataError::Hdf5 {
                path: path.to_path_buf(),
                detail,
            }
        }
    })
}

fn dataset(file: &::hdf5::File, path: &Path, name: &str) -> Result<::hdf5::Dataset, DataError> {
    if !file.link_exists(name) {
        let available = file
            .member_names()
            .map(|n| n.join(", "))
            .unwrap_or_default();
        return Err(DataError::MissingDataset {
            path: path.to_path_buf(),
            dataset: name.to_string(),
            available,
        });
    }
    file.dataset(name).map_err(|e| h5_err(path, e))
}

/// Refuses a dataset whose storage does not match what it declares, before anything
/// allocates or reads: a damaged header can declare terabytes (an allocation that large aborts
/// the process), and libhdf5 1.10 reads past a compact or contiguous buffer smaller than the
/// declared data (a segfault). Contiguous and compact data must be stored in full, inside the
/// file; chunked data may be compressed, by at most about 1,000:1 (gzip's limit). Data kept in
/// other files (external storage, virtual datasets) is refused: gpl reads only the file named.
fn check_size(ds: &::hdf5::Dataset, path: &Path, name: &str) -> Result<(), DataError> {
    use ::hdf5::plist::dataset_create::Layout;
    let file_len = std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| DataError::io(path, e))?;
    let damaged = |detail: String| DataError::Truncated {
        path: path.to_path_buf(),
        detail: format!("dataset `{name}` of shape {:?} {detail}", ds.shape()),
    };
    let element = ds.dtype().map(|t| t.size() as u64).unwrap_or(1);
    let Some(bytes) = ds
        .shape()
        .iter()
        .try_fold(element, |acc, &d| acc.checked_mul(d as u64))
    else {
        return Err(damaged("declares more data than any file holds".into()));
    };
    if ds.dcpl().is_ok_and(|p| !p.external().is_empty()) {
        return Err(DataError::Hdf5 {
            path: path.to_path_buf(),
            detail: format!(
                "dataset `{name}` keeps its data in other files, which gpl does not read"
            ),
        });
    }
    if ds.is_chunked() {
        if bytes > file_len.saturating_mul(1100) {
            return Err(damaged(format!(
                "declares more data than the file's {file_len} bytes can hold"
            )));
        }
    } else if matches!(ds.layout(), Layout::Contiguous | Layout::Compact) {
        let stored = ds.storage_size();
        if stored < bytes {
            return Err(damaged(format!(
                "declares {bytes} bytes but stores {stored}"
            )));
        }
        if ds
            .offset()
            .is_some_and(|offset| offset.saturating_add(stored) > file_len)
        {
            return Err(damaged(format!(
                "lies past the end of the file's {file_len} bytes"
            )));
        }
    } else {
        return Err(DataError::Hdf5 {
            path: path.to_path_buf(),
            detail: format!("dataset `{name}` is a virtual dataset (its data is in other files), which gpl does not read"),
        });
    }
    Ok(())
}

fn dtype_name(td: &TypeDescriptor) -> String {
    let int_bits = |s: &IntSize| *s as usize * 8;
    match td {
        TypeDescriptor::Integer(s) => format!("int{}", int_bits(s)),
        TypeDescriptor::Unsigned(s) => format!("uint{}", int_bits(s)),
        TypeDescriptor::Float(FloatSize::U4) => "float32".into(),
        TypeDescriptor::Float(FloatSize::U8) => "float64".into(),
        TypeDescriptor::Boolean => "bool".into(),
        other => format!("{other}"),
    }
}

fn descriptor(ds: &::hdf5::Dataset, path: &Path) -> Result<TypeDescriptor, DataError> {
    ds.dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| h5_err(path, e))
}

/// Which Galaxy10 layout a file has: DECaLS if it carries `ra` and `pxscale` or its images
/// are 256×256 (a synthetic DECaLS set has no coordinates), SDSS if they are 69×69.
pub fn detect_layout(file: &::hdf5::File, images: &str) -> Layout {
    if file.link_exists("ra") && file.link_exists("pxscale") {
        return Layout::Decals;
    }
    match file.dataset(images).map(|d| d.shape()) {
        Ok(s) if s.len() == 4 && s[1] == 69 && s[2] == 69 => Layout::Sdss,
        Ok(s) if s.len() == 4 && s[1] == 256 && s[2] == 256 => Layout::Decals,
        _ => Layout::Other,
    }
}

/// Loads a Galaxy10 file: `images` (N×H×W×C or N×H×W; uint8, or float in [0,1] or [0,255])
/// and `labels` (N, any integer type, values in 0..10).
pub fn load_galaxy10(
    path: impl AsRef<Path>,
    images: &str,
    labels: &str,
) -> Result<ImageSet, DataError> {
    let path = path.as_ref();
    let file = open(path)?;
    let layout = detect_layout(&file, images);
    let class_names: Vec<String> = match layout {
        Layout::Decals => DECALS_CLASSES.iter().map(|s| s.to_string()).collect(),
        Layout::Sdss | Layout::Other => SDSS_CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    load_with_classes(&file, path, images, labels, class_names)
}

/// Loads any HDF5 image set with the given class names (labels must be below their count).
pub fn load_hdf5(
    path: impl AsRef<Path>,
    images: &str,
    labels: &str,
    class_names: Vec<String>,
) -> Result<ImageSet, DataError> {
    let path = path.as_ref();
    let file = open(path)?;
    load_with_classes(&file, path, images, labels, class_names)
}

/// What `gpl check` learns from a file's header, without reading pixels or labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub count: usize,
    /// Per image: height, width, channels (1 for N×H×W images).
    pub image_shape: [usize; 3],
    pub image_dtype: String,
}

/// Reads and checks the header of an image set: both datasets exist, images are N×H×W×C
/// (C in 1..=4) or N×H×W of uint8 or float, labels are N (or N×1) of an integer type, and
/// the counts agree. Reads no data, so it is what `gpl check` calls.
pub fn read_header(
    path: impl AsRef<Path>,
    images: &str,
    labels: &str,
) -> Result<Header, DataError> {
    let path = path.as_ref();
    let file = open(path)?;
    header(&file, path, images, labels).map(|(h, _, _)| h)
}

fn header(
    file: &::hdf5::File,
    path: &Path,
    images: &str,
    labels: &str,
) -> Result<(Header, ::hdf5::Dataset, ::hdf5::Dataset), DataError> {
    let image_ds = dataset(file, path, images)?;
    let label_ds = dataset(file, path, labels)?;
    let shape = image_ds.shape();
    check_size(&image_ds, path, images)?;
    check_size(&label_ds, path, labels)?;
    let (n, height, width, channels) = match *shape.as_slice() {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c] if (1..=4).contains(&c) => (n, h, w, c),
        _ => {
            return Err(DataError::WrongRank {
                path: path.to_path_buf(),
                dataset: images.to_string(),
                expected: "N×H×W×C with C in 1..=4, or N×H×W".into(),
                found: shape,
            })
        }
    };
    let label_shape = label_ds.shape();
    let n_labels = match *label_shape.as_slice() {
        [m] => m,
        [m, 1] => m,
        _ => {
            return Err(DataError::WrongRank {
                path: path.to_path_buf(),
                dataset: labels.to_string(),
                expected: "N".into(),
                found: label_shape,
            })
        }
    };
    if n_labels != n {
        return Err(DataError::CountMismatch {
            path: path.to_path_buf(),
            images: images.to_string(),
            labels: labels.to_string(),
            n_images: n,
            n_labels,
        });
    }
    match descriptor(&label_ds, path)? {
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {}
        other => {
            return Err(DataError::WrongDtype {
                path: path.to_path_buf(),
                dataset: labels.to_string(),
                expected: "an integer type".into(),
                found: dtype_name(&other),
            })
        }
    }
    let image_dtype = match descriptor(&image_ds, path)? {
        td @ (TypeDescriptor::Unsigned(IntSize::U1) | TypeDescriptor::Float(_)) => dtype_name(&td),
        other => {
            return Err(DataError::WrongDtype {
                path: path.to_path_buf(),
                dataset: images.to_string(),
                expected: "uint8, float32 or float64".into(),
                found: dtype_name(&other),
            })
        }
    };
    let header = Header {
        count: n,
        image_shape: [height, width, channels],
        image_dtype,
    };
    Ok((header, image_ds, label_ds))
}

fn load_with_classes(
    file: &::hdf5::File,
    path: &Path,
    images: &str,
    labels: &str,
    class_names: Vec<String>,
) -> Result<ImageSet, DataError> {
    let (header, image_ds, label_ds) = header(file, path, images, labels)?;
    let [height, width, channels] = header.image_shape;
    let labels_vec = read_labels(&label_ds, path, labels, class_names.len())?;
    let pixels = read_pixels(&image_ds, path, images)?;
    Ok(ImageSet {
        height,
        width,
        channels,
        images: pixels,
        labels: labels_vec,
        class_names,
    })
}

/// Every problem a run would meet loading `path` as a Galaxy10 file, not just the first:
/// `gpl data inspect` lists them all. Empty when the file loads.
pub fn validate_galaxy10(path: impl AsRef<Path>, images: &str, labels: &str) -> Vec<DataError> {
    let path = path.as_ref();
    let file = match open(path) {
        Ok(f) => f,
        Err(e) => return vec![e],
    };
    let layout = detect_layout(&file, images);
    let classes = match layout {
        Layout::Decals => DECALS_CLASSES.len(),
        Layout::Sdss | Layout::Other => SDSS_CLASSES.len(),
    };
    let mut problems = Vec::new();
    // Each dataset on its own, so one broken dataset does not hide the other's problems.
    match dataset(&file, path, images) {
        Ok(ds) => {
            let shape = ds.shape();
            let rank_ok = matches!(*shape.as_slice(), [_, _, _] | [_, _, _, 1..=4]);
            if !rank_ok {
                problems.push(DataError::WrongRank {
                    path: path.to_path_buf(),
                    dataset: images.to_string(),
                    expected: "N×H×W×C with C in 1..=4, or N×H×W".into(),
                    found: shape,
                });
            }
            if let Err(e) =
                check_size(&ds, path, images).and_then(|()| read_pixels(&ds, path, images))
            {
                problems.push(e);
            }
        }
        Err(e) => problems.push(e),
    }
    match dataset(&file, path, labels) {
        Ok(ds) => {
            let shape = ds.shape();
            if !matches!(*shape.as_slice(), [_] | [_, 1]) {
                problems.push(DataError::WrongRank {
                    path: path.to_path_buf(),
                    dataset: labels.to_string(),
                    expected: "N".into(),
                    found: shape,
                });
            } else if let Err(e) =
                check_size(&ds, path, labels).and_then(|()| read_labels(&ds, path, labels, classes))
            {
                problems.push(e);
            }
        }
        Err(e) => problems.push(e),
    }
    if let (Ok(i), Ok(l)) = (dataset(&file, path, images), dataset(&file, path, labels)) {
        let (n_images, n_labels) = (
            i.shape().first().copied().unwrap_or(0),
            l.shape().first().copied().unwrap_or(0),
        );
        if n_images != n_labels {
            problems.push(DataError::CountMismatch {
                path: path.to_path_buf(),
                images: images.to_string(),
                labels: labels.to_string(),
                n_images,
                n_labels,
            });
        }
    }
    problems
}

fn read_labels(
    ds: &::hdf5::Dataset,
    path: &Path,
    name: &str,
    classes: usize,
) -> Result<Vec<u32>, DataError> {
    let td = descriptor(ds, path)?;
    let raw: Vec<i64> = match td {
        TypeDescriptor::Integer(_)
        | TypeDescriptor::Unsigned(IntSize::U1 | IntSize::U2 | IntSize::U4) => {
            ds.read_raw::<i64>().map_err(|e| h5_err(path, e))?
        }
        TypeDescriptor::Unsigned(IntSize::U8) => {
            // u64 labels above i64::MAX are out of range anyway; saturate rather than wrap.
            ds.read_raw::<u64>()
                .map_err(|e| h5_err(path, e))?
                .into_iter()
                .map(|v| v.min(i64::MAX as u64) as i64)
                .collect()
        }
        other => {
            return Err(DataError::WrongDtype {
                path: path.to_path_buf(),
                dataset: name.to_string(),
                expected: "an integer type".into(),
                found: dtype_name(&other),
            })
        }
    };
    raw.iter()
        .enumerate()
        .map(|(index, &value)| {
            if value < 0 || value as usize >= classes {
                Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    dataset: name.to_string(),
                    index,
                    value,
                    classes,
                })
            } else {
                Ok(value as u32)
            }
        })
        .collect()
}

fn read_pixels(ds: &::hdf5::Dataset, path: &Path, name: &str) -> Result<Vec<u8>, DataError> {
    let td = descriptor(ds, path)?;
    match td {
        // Straight into the final buffer: no conversion, no copy.
        TypeDescriptor::Unsigned(IntSize::U1) => ds.read_raw::<u8>().map_err(|e| h5_err(path, e)),
        TypeDescriptor::Float(FloatSize::U4) => {
            let raw = ds.read_raw::<f32>().map_err(|e| h5_err(path, e))?;
            floats_to_u8(raw.iter().map(|&v| v as f64), raw.len(), path, name)
        }
        TypeDescriptor::Float(FloatSize::U8) => {
            let raw = ds.read_raw::<f64>().map_err(|e| h5_err(path, e))?;
            floats_to_u8(raw.iter().copied(), raw.len(), path, name)
        }
        other => Err(DataError::WrongDtype {
            path: path.to_path_buf(),
            dataset: name.to_string(),
            expected: "uint8, float32 or float64".into(),
            found: dtype_name(&other),
        }),
    }
}

/// Float pixels in [0, 1] (when none exceeds 1) are scaled by 255; otherwise they must lie in
/// [0, 255]. Rounded to nearest.
fn floats_to_u8(
    values: impl Iterator<Item = f64> + Clone,
    len: usize,
    path: &Path,
    name: &str,
) -> Result<Vec<u8>, DataError> {
    let mut max = 0f64;
    for (index, v) in values.clone().enumerate() {
        if !(0.0..=255.0).contains(&v) {
            return Err(DataError::PixelOutOfRange {
                path: path.to_path_buf(),
                dataset: name.to_string(),
                index,
                value: v,
            });
        }
        max = max.max(v);
    }
    let scale = if max <= 1.0 { 255.0 } else { 1.0 };
    let mut out = Vec::with_capacity(len);
    out.extend(values.map(|v| (v * scale).round() as u8));
    Ok(out)
}

/// DECaLS per-image coordinates, redshift and pixel scale.
pub fn read_decals_meta(path: impl AsRef<Path>) -> Result<DecalsMeta, DataError> {
    let path = path.as_ref();
    let file = open(path)?;
    let read = |name: &str| -> Result<Vec<f64>, DataError> {
        let ds = dataset(&file, path, name)?;
        match descriptor(&ds, path)? {
            TypeDescriptor::Float(_) | TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {
                ds.read_raw::<f64>().map_err(|e| h5_err(path, e))
            }
            other => Err(DataError::WrongDtype {
                path: path.to_path_buf(),
                dataset: name.into(),
                expected: "a number".into(),
                found: dtype_name(&other),
            }),
        }
    };
    Ok(DecalsMeta {
        ra: read("ra")?,
        dec: read("dec")?,
        redshift: read("redshift")?,
        pxscale: read("pxscale")?,
    })
}

/// Everything `gpl data inspect` shows: layout, datasets with shape, dtype, chunking and
/// compression, and class counts of `ans`.
pub fn inspect(path: impl AsRef<Path>) -> Result<Hdf5Summary, DataError> {
    let path = path.as_ref();
    let file = open(path)?;
    let mut names = file.member_names().map_err(|e| h5_err(path, e))?;
    names.sort();
    let mut datasets = Vec::new();
    for name in &names {
        let Ok(ds) = file.dataset(name) else { continue };
        let dtype = descriptor(&ds, path)
            .map(|t| dtype_name(&t))
            .unwrap_or_else(|_| "unknown".into());
        datasets.push(DatasetInfo {
            name: name.clone(),
            shape: ds.shape(),
            dtype,
            chunks: ds.chunk(),
            compressed: !ds.filters().is_empty(),
        });
    }
    let class_counts = file.dataset("ans").ok().and_then(|ds| {
        let shape = ds.shape();
        if shape.len() != 1 || check_size(&ds, path, "ans").is_err() {
            return None;
        }
        let values = ds.read_raw::<i64>().ok()?;
        let mut counts = std::collections::BTreeMap::new();
        for v in values {
            *counts.entry(v).or_insert(0usize) += 1;
        }
        Some(counts.into_iter().collect())
    });
    Ok(Hdf5Summary {
        path: path.to_path_buf(),
        layout: detect_layout(&file, "images"),
        datasets,
        class_counts,
    })
}

/// Writes the real Galaxy10 layout (`images` uint8 N×H×W×C, `ans` uint8 N), contiguous and
/// uncompressed (fastest to load), atomically: a temp file beside `path`, then a rename.
pub fn write_galaxy10_h5(set: &ImageSet, path: impl AsRef<Path>) -> Result<(), DataError> {
    let path = path.as_ref();
    if set.class_names.len() > 256 {
        return Err(DataError::invalid(
            "image set",
            "more than 256 classes do not fit uint8 labels",
        ));
    }
    let tmp = crate::fsutil::temp_beside(path);
    let result = (|| -> Result<(), ::hdf5::Error> {
        let file = ::hdf5::File::create(&tmp)?;
        let images = file
            .new_dataset::<u8>()
            .shape([set.len(), set.height, set.width, set.channels])
            .create("images")?;
        if !set.is_empty() {
            images.write_raw(set.images.as_slice())?;
        }
        let labels: Vec<u8> = set.labels.iter().map(|&l| l as u8).collect();
        let ans = file.new_dataset::<u8>().shape([set.len()]).create("ans")?;
        if !set.is_empty() {
            ans.write_raw(labels.as_slice())?;
        }
        file.close()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(h5_err(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
}
