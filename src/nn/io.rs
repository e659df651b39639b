//! Model checkpoints as safetensors: every parameter, running statistic and optimizer slot
//! as an f32 tensor, and the model IR, optimizer config and seed as JSON in the metadata,
//! so a checkpoint alone rebuilds the network. Written to a temporary file and renamed.

use super::error::EngineError;
use super::ir::ModelIr;
use super::network::Network;
use super::optim::OptimizerConfig;
use crate::nn::learner::{NamedTensors, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

const IR_KEY: &str = "gpl_ir";
const OPTIMIZER_KEY: &str = "gpl_optimizer";
const SEED_KEY: &str = "gpl_seed";

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |source| EngineError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

fn format_error(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::Checkpoint {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Serialises named tensors with string metadata into safetensors bytes.
pub fn to_bytes(
    tensors: &NamedTensors,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, String> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                t.shape.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("{name}: {e:?}"))
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, &Some(metadata)).map_err(|e| format!("{e:?}"))
}

/// Reads every f32 tensor and the metadata of safetensors bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<(NamedTensors, HashMap<String, String>), String> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| format!("{e:?}"))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("{e:?}"))?;
    let mut out = NamedTensors::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(format!(
                "tensor `{name}` is {:?}, gpl reads f32",
                view.dtype()
            ));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((out, metadata))
}

/// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    crate::fsutil::write_atomic(path, bytes).map_err(io_error("write", path))
}

impl Network {
    /// Saves weights, running statistics, optimizer state and the IR to one safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), EngineError> {
        let mut metadata = HashMap::new();
        let json =
            |v: Result<String, serde_json::Error>| v.map_err(|e| format_error(path, e.to_string()));
        metadata.insert(IR_KEY.to_string(), json(serde_json::to_string(self.ir()))?);
        metadata.insert(
            OPTIMIZER_KEY.to_string(),
            json(serde_json::to_string(&self.optimizer()))?,
        );
        metadata.insert(SEED_KEY.to_string(), self.seed().to_string());
        let bytes = to_bytes(&self.named_state(), metadata).map_err(|m| format_error(path, m))?;
        write_atomic(path, &bytes)
    }

    /// Rebuilds a network from a file written by `save`.
    pub fn load(path: &Path) -> Result<Network, EngineError> {
        let bytes = std::fs::read(path).map_err(io_error("read", path))?;
        let (tensors, metadata) = from_bytes(&bytes).map_err(|m| format_error(path, m))?;
        let ir_json = metadata
            .get(IR_KEY)
            .ok_or_else(|| format_error(path, "no `gpl_ir` metadata"))?;
        let ir: ModelIr = serde_json::from_str(ir_json)
            .map_err(|e| format_error(path, format!("bad model IR: {e}")))?;
        let optimizer: OptimizerConfig = match metadata.get(OPTIMIZER_KEY) {
            Some(j) => serde_json::from_str(j)
                .map_err(|e| format_error(path, format!("bad optimizer: {e}")))?,
            None => OptimizerConfig::adam(),
        };
        let seed = metadata
            .get(SEED_KEY)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut network = Network::new(&ir, seed, optimizer)?;
        network.load_named_state(&tensors)?;
        Ok(network)
    }
}
