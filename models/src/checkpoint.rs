//! Checkpoints: parameters, AdamW moments, step and model config in one safetensors file
//! (<https://github.com/huggingface/safetensors> format: an 8-byte little-endian header
//! length, a JSON header, then the raw little-endian tensor bytes), so Python's `safetensors`
//! and `numpy` read them too.
//!
//! Tensor names: `param.<name>`, `adam_m.<name>`, `adam_v.<name>`. The header's
//! `__metadata__` holds `format` (`netfm-checkpoint-1`), `config` (the [`ModelConfig`] JSON),
//! `step`, and `dtype`.

use crate::config::ModelConfig;
use crate::graph::{DType, Data, Tensor};
use std::collections::{BTreeMap, HashMap};
use thiserror::Error;

pub const FORMAT: &str = "netfm-checkpoint-1";

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub config: ModelConfig,
    pub dtype: DType,
    pub step: u64,
    pub params: HashMap<String, Tensor>,
    /// AdamW moments; empty for an inference-only export.
    pub adam_m: HashMap<String, Tensor>,
    pub adam_v: HashMap<String, Tensor>,
}

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("not a safetensors file: {0}")]
    Format(String),
    #[error("not a netfm checkpoint (metadata format {0:?})")]
    NotNetfm(Option<String>),
    #[error("checkpoint metadata: {0}")]
    Metadata(String),
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "F32",
        DType::F64 => "F64",
        DType::I64 => "I64",
        DType::Bool => "BOOL",
    }
}

impl Checkpoint {
    /// A model before its first step: parameters only, no optimizer state.
    pub fn new_model(
        config: ModelConfig,
        dtype: DType,
        params: HashMap<String, Tensor>,
    ) -> Checkpoint {
        Checkpoint {
            config,
            dtype,
            step: 0,
            params,
            adam_m: HashMap::new(),
            adam_v: HashMap::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut tensors: Vec<(String, &Tensor)> = Vec::new();
        for (prefix, map) in [
            ("param", &self.params),
            ("adam_m", &self.adam_m),
            ("adam_v", &self.adam_v),
        ] {
            for (k, t) in map {
                tensors.push((format!("{prefix}.{k}"), t));
            }
        }
        let metadata: BTreeMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("config", self.config.to_json()),
            ("step", self.step.to_string()),
            ("dtype", dtype_name(self.dtype).to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        crate::safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), *t)), &metadata)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let st = crate::safetensors::parse(bytes).map_err(|e| {
            CheckpointError::Format(e.to_string().replace("not a safetensors file: ", ""))
        })?;
        let get = |k: &str| st.metadata.get(k).cloned();
        if get("format").as_deref() != Some(FORMAT) {
            return Err(CheckpointError::NotNetfm(get("format")));
        }
        let md = |m: &str| CheckpointError::Metadata(m.to_string());
        let config = ModelConfig::from_json(&get("config").ok_or_else(|| md("no config"))?)
            .map_err(|e| md(&format!("config: {e}")))?;
        let step = get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| md("no step"))?;
        let dtype = match get("dtype").as_deref() {
            Some("F32") => DType::F32,
            Some("F64") => DType::F64,
            other => return Err(md(&format!("dtype {other:?}"))),
        };
        let mut ck = Checkpoint {
            config,
            dtype,
            step,
            params: HashMap::new(),
            adam_m: HashMap::new(),
            adam_v: HashMap::new(),
        };
        for (name, t) in st.tensors {
            if !matches!(t.data, Data::F32(_) | Data::F64(_)) {
                return Err(CheckpointError::Format(format!(
                    "tensor {name}: not a float tensor"
                )));
            }
            if let Some(k) = name.strip_prefix("param.") {
                ck.params.insert(k.to_string(), t);
            } else if let Some(k) = name.strip_prefix("adam_m.") {
                ck.adam_m.insert(k.to_string(), t);
            } else if let Some(k) = name.strip_prefix("adam_v.") {
                ck.adam_v.insert(k.to_string(), t);
            }
        }
        Ok(ck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::param_specs;
    use crate::params::init_params;

    #[test]
    fn round_trips_and_rejects_damage() {
        let cfg = ModelConfig::named("tiny").unwrap();
        let specs = param_specs(&cfg).unwrap();
        let params = init_params(&specs, 3, DType::F32);
        let ck = Checkpoint {
            config: cfg,
            dtype: DType::F32,
            step: 17,
            adam_m: params.clone(),
            adam_v: params.clone(),
            params,
        };
        let bytes = ck.to_bytes();
        assert_eq!(Checkpoint::from_bytes(&bytes).unwrap(), ck);
        assert!(matches!(
            Checkpoint::from_bytes(&bytes[..bytes.len() - 1]),
            Err(CheckpointError::Format(_))
        ));
        assert!(matches!(
            Checkpoint::from_bytes(b"PK\x03\x04"),
            Err(CheckpointError::Format(_))
        ));
        let mut other = bytes.clone();
        let at = other
            .windows(FORMAT.len())
            .position(|w| w == FORMAT.as_bytes())
            .unwrap();
        other[at] = b'X';
        assert!(matches!(
            Checkpoint::from_bytes(&other),
            Err(CheckpointError::NotNetfm(_))
        ));
    }
}
