//! Weight files: `NamedTensors` to and from safetensors, Keras HDF5 weight import, and
//! `freeze until` / `trainable from` as per-layer trainable flags on a `ModelIr`.
//!
//! Tensor names are `<layer>/<variable>` (`block1_conv1/kernel`, `dense_1/bias`,
//! `batch_normalization_1/moving_mean`), Keras's own variable names, so a Keras file maps
//! by layer name. Kernels keep Keras's axis order (conv `[kh, kw, in, out]`, dense
//! `[in, out]`), the order `nn::ir` documents.

use crate::nn::ir::ModelIr;
use crate::nn::learner::{NamedTensors, Tensor};
use crate::train::error::{Result, TrainError};
use std::collections::BTreeMap;
use std::path::Path;

/// Free-form string metadata stored in a safetensors header (`__metadata__`).
pub type Metadata = BTreeMap<String, String>;

/// Serialises tensors to safetensors bytes (all F32, little-endian).
///
/// The header is written here rather than by `safetensors::serialize` because that takes
/// the metadata as a `HashMap`, whose order changes from run to run: with a `BTreeMap` and
/// tensors laid out in name order (the order the crate itself uses for one dtype), equal
/// inputs give byte-identical files, which the stage cache relies on.
pub fn to_safetensors_bytes(tensors: &NamedTensors, metadata: &Metadata) -> Vec<u8> {
    // Written by hand in the crate's own layout: `__metadata__` first, then each tensor's
    // dtype, shape and offsets in file order.
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut entries = Vec::with_capacity(tensors.len() + 1);
    if !metadata.is_empty() {
        let meta: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
            .collect();
        entries.push(format!("\"__metadata__\":{{{}}}", meta.join(",")));
    }
    let mut offset = 0usize;
    for (name, tensor) in tensors {
        let bytes = tensor.data.len() * 4;
        let shape: Vec<String> = tensor.shape.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            "{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            quote(name),
            shape.join(","),
            offset,
            offset + bytes
        ));
        offset += bytes;
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    // The format pads the header with spaces to a multiple of 8 bytes.
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for tensor in tensors.values() {
        for v in &tensor.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Parses safetensors bytes (F32, F64, F16 and BF16 tensors are read as f32).
pub fn from_safetensors_bytes(bytes: &[u8], path: &Path) -> Result<(NamedTensors, Metadata)> {
    use safetensors::{Dtype, SafeTensors};
    let bad = |message: String| TrainError::BadSafetensors {
        path: path.to_path_buf(),
        message,
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let metadata: Metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let file = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let mut tensors = NamedTensors::new();
    for (name, view) in file.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
            other => {
                return Err(bad(format!(
                    "tensor `{name}` has dtype {other:?}; only float tensors are weights"
                )))
            }
        };
        tensors.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((tensors, metadata))
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exponent = ((bits >> 10) & 0x1f) as u32;
    let mantissa = (bits & 0x3ff) as u32;
    let magnitude = match exponent {
        0 => {
            // Subnormal (or zero): mantissa * 2^-24.
            let value = mantissa as f32 * 2f32.powi(-24);
            return if sign != 0 { -value } else { value };
        }
        0x1f => 0xff << 23 | mantissa << 13,
        e => (e + 127 - 15) << 23 | mantissa << 13,
    };
    f32::from_bits(sign | magnitude)
}

/// Writes tensors and metadata to a safetensors file, atomically.
pub fn save_safetensors(path: &Path, tensors: &NamedTensors, metadata: &Metadata) -> Result<()> {
    crate::train::write_atomic(path, &to_safetensors_bytes(tensors, metadata))
}

pub fn load_safetensors(path: &Path) -> Result<(NamedTensors, Metadata)> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io("read", path, e))?;
    from_safetensors_bytes(&bytes, path)
}

/// Expected shape of every tensor to import, by name (`<layer>/<variable>`).
pub type ExpectedShapes = BTreeMap<String, Vec<usize>>;

/// Keeps the tensors `expected` names, checking each shape; a name absent from the file
/// is an error naming its layer.
pub fn select_expected(
    all: NamedTensors,
    expected: &ExpectedShapes,
    path: &Path,
) -> Result<NamedTensors> {
    let mut all = all;
    let mut out = NamedTensors::new();
    for (name, shape) in expected {
        let layer = layer_of(name).to_string();
        let Some(tensor) = all.remove(name) else {
            let mut layers: Vec<&str> = all.keys().chain(out.keys()).map(|n| layer_of(n)).collect();
            layers.sort_unstable();
            layers.dedup();
            return Err(TrainError::MissingLayerWeights {
                layer,
                path: path.to_path_buf(),
                available: layers.join(", "),
            });
        };
        if &tensor.shape != shape {
            return Err(TrainError::WeightShapeMismatch {
                layer,
                name: name.clone(),
                path: path.to_path_buf(),
                expected: shape.clone(),
                found: tensor.shape,
            });
        }
        out.insert(name.clone(), tensor);
    }
    Ok(out)
}

fn layer_of(name: &str) -> &str {
    name.rsplit_once('/').map_or(name, |(layer, _)| layer)
}

/// Reads every weight in a Keras HDF5 weights file as `<layer>/<variable>` tensors.
///
/// Two layouts are understood:
/// - Keras 2 / tf.keras `save_weights("x.h5")` (VGG16's `..._notop.h5` among them): root
///   attribute `layer_names`; each layer group has a `weight_names` attribute
///   (`block1_conv1/kernel:0`) naming datasets under the group.
/// - Keras 3 `save_weights("x.weights.h5")`: groups `layers/<layer>/vars` holding datasets
///   `0`, `1`, ... in creation order; variables are named from their count (1: kernel,
///   2: kernel and bias, 4: gamma, beta, moving_mean, moving_variance), since Keras 3
///   stores no variable names.
pub fn read_keras_h5(path: &Path) -> Result<NamedTensors> {
    let bad = |message: String| TrainError::BadKerasWeights {
        path: path.to_path_buf(),
        message,
    };
    // Checked first so that a wrong file is reported without HDF5's error-stack printout.
    let mut signature = [0u8; 8];
    let readable = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut signature));
    if let Err(e) = readable {
        return Err(TrainError::io("read", path, e));
    }
    if &signature != b"\x89HDF\r\n\x1a\n" {
        return Err(bad("not an HDF5 file".into()));
    }
    let file = hdf5::File::open(path).map_err(|e| bad(e.to_string()))?;
    if file
        .attr_names()
        .map_err(|e| bad(e.to_string()))?
        .iter()
        .any(|a| a == "layer_names")
    {
        read_keras2(&file).map_err(bad)
    } else {
        let mut out = NamedTensors::new();
        read_keras3_group(&file, &mut out).map_err(bad)?;
        if out.is_empty() {
            return Err(bad(
                "neither a `layer_names` attribute (Keras 2) nor `layers/*/vars` groups (Keras 3)"
                    .into(),
            ));
        }
        Ok(out)
    }
}

/// Reads Keras weights and checks them against the model's expected names and shapes.
pub fn load_keras_h5(path: &Path, expected: &ExpectedShapes) -> Result<NamedTensors> {
    select_expected(read_keras_h5(path)?, expected, path)
}

fn read_strings(attr: &hdf5::Attribute) -> std::result::Result<Vec<String>, String> {
    use hdf5::types::{FixedAscii, FixedUnicode, VarLenAscii, VarLenUnicode};
    // Keras 2 stores a weightless layer's `weight_names` as an empty float array.
    if attr.size() == 0 {
        return Ok(Vec::new());
    }
    // h5py writes numpy byte strings as fixed-length ASCII; other writers use variable
    // length or UTF-8. HDF5 converts between string sizes, so one wide buffer fits all.
    if let Ok(v) = attr.read_raw::<FixedAscii<1024>>() {
        return Ok(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    if let Ok(v) = attr.read_raw::<FixedUnicode<1024>>() {
        return Ok(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    if let Ok(v) = attr.read_raw::<VarLenUnicode>() {
        return Ok(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    attr.read_raw::<VarLenAscii>()
        .map(|v| v.iter().map(|s| s.as_str().to_string()).collect())
        .map_err(|e| format!("attribute `{}` is not a list of strings: {e}", attr.name()))
}

fn read_dataset(ds: &hdf5::Dataset) -> std::result::Result<Tensor, String> {
    let data: Vec<f32> = ds
        .read_raw::<f32>()
        .map_err(|e| format!("{}: {e}", ds.name()))?;
    Ok(Tensor {
        shape: ds.shape(),
        data,
    })
}

fn read_keras2(file: &hdf5::File) -> std::result::Result<NamedTensors, String> {
    let e = |e: hdf5::Error| e.to_string();
    let layers = read_strings(&file.attr("layer_names").map_err(e)?)?;
    let mut out = NamedTensors::new();
    for layer in layers {
        let group = file
            .group(&layer)
            .map_err(|err| format!("layer `{layer}` listed but missing: {err}"))?;
        if !group
            .attr_names()
            .map_err(e)?
            .iter()
            .any(|a| a == "weight_names")
        {
            continue;
        }
        let names = read_strings(&group.attr("weight_names").map_err(e)?)?;
        for weight in names {
            let ds = group
                .dataset(&weight)
                .map_err(|err| format!("dataset `{layer}/{weight}`: {err}"))?;
            // `block1_conv1/kernel:0` → `kernel`.
            let short = weight.rsplit('/').next().unwrap_or(&weight);
            let short = short.split(':').next().unwrap_or(short);
            out.insert(format!("{layer}/{short}"), read_dataset(&ds)?);
        }
    }
    Ok(out)
}

fn read_keras3_group(
    group: &hdf5::Group,
    out: &mut NamedTensors,
) -> std::result::Result<(), String> {
    let e = |e: hdf5::Error| e.to_string();
    // Only subgroups are visited (opening a dataset as a group would print HDF5 errors).
    for child in group.groups().map_err(e)? {
        let path = child.name();
        let name = path.rsplit('/').next().unwrap_or(&path).to_string();
        if name == "optimizer" {
            continue;
        }
        if child.link_exists("vars") {
            let vars = child.group("vars").map_err(e)?;
            let mut indexed: Vec<(usize, Tensor)> = Vec::new();
            for ds in vars.datasets().map_err(e)? {
                let path = ds.name();
                let Ok(index) = path.rsplit('/').next().unwrap_or(&path).parse::<usize>() else {
                    continue;
                };
                indexed.push((index, read_dataset(&ds)?));
            }
            indexed.sort_by_key(|(i, _)| *i);
            let names: &[&str] = match indexed.len() {
                0 => &[],
                1 => &["kernel"],
                2 => &["kernel", "bias"],
                4 => &["gamma", "beta", "moving_mean", "moving_variance"],
                n => {
                    return Err(format!(
                        "layer `{name}` has {n} variables; cannot tell their names"
                    ))
                }
            };
            for ((_, tensor), var) in indexed.into_iter().zip(names) {
                out.insert(format!("{name}/{var}"), tensor);
            }
        }
        read_keras3_group(&child, out)?;
    }
    Ok(())
}

/// Which layers train when part of a model is frozen.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freeze {
    /// `freeze until <layer>`: that layer and every layer before it are frozen.
    Until(String),
    /// `trainable from <layer>`: that layer and every layer after it train; earlier ones are frozen.
    TrainableFrom(String),
}

/// Sets `trainable` on every layer of `model` (all true first, then the freeze applied).
pub fn apply_freeze(model: &mut ModelIr, freeze: &Freeze) -> Result<()> {
    let name = match freeze {
        Freeze::Until(n) | Freeze::TrainableFrom(n) => n,
    };
    let Some(index) = model.layer_index(name) else {
        return Err(TrainError::UnknownLayer {
            layer: name.clone(),
            model: model.name.clone(),
            available: model
                .layers
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let first_trainable = match freeze {
        Freeze::Until(_) => index + 1,
        Freeze::TrainableFrom(_) => index,
    };
    for (i, layer) in model.layers.iter_mut().enumerate() {
        layer.trainable = i >= first_trainable;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_values_convert() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
