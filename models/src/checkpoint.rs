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
use serde_json::{json, Map, Value};
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
        let mut tensors: BTreeMap<String, &Tensor> = BTreeMap::new();
        for (prefix, map) in [
            ("param", &self.params),
            ("adam_m", &self.adam_m),
            ("adam_v", &self.adam_v),
        ] {
            for (k, t) in map {
                tensors.insert(format!("{prefix}.{k}"), t);
            }
        }
        let mut header = Map::new();
        header.insert(
            "__metadata__".into(),
            json!({
                "format": FORMAT,
                "config": self.config.to_json(),
                "step": self.step.to_string(),
                "dtype": dtype_name(self.dtype),
            }),
        );
        let mut data = Vec::new();
        for (name, t) in &tensors {
            let bytes = t.data.raw_le();
            let start = data.len();
            data.extend_from_slice(&bytes);
            header.insert(
                name.clone(),
                json!({"dtype": dtype_name(t.data.dtype()), "shape": t.dims, "data_offsets": [start, data.len()]}),
            );
        }
        let mut h = serde_json::to_vec(&Value::Object(header)).expect("header serializes");
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + h.len() + data.len());
        out.extend_from_slice(&(h.len() as u64).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let fmt = |m: &str| CheckpointError::Format(m.to_string());
        let len = bytes.get(..8).ok_or_else(|| fmt("shorter than 8 bytes"))?;
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        let end = 8usize
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| fmt("header runs past the end"))?;
        let header: Map<String, Value> = serde_json::from_slice(&bytes[8..end])
            .map_err(|e| fmt(&format!("header JSON: {e}")))?;
        let data = &bytes[end..];
        let meta = header.get("__metadata__").and_then(Value::as_object);
        let get = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
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
        for (name, info) in &header {
            if name == "__metadata__" {
                continue;
            }
            let bad = |m: &str| fmt(&format!("tensor {name}: {m}"));
            let dt = info
                .get("dtype")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no dtype"))?;
            let dims: Vec<i64> = info
                .get("shape")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("no shape"))?
                .iter()
                .map(|d| {
                    d.as_i64()
                        .filter(|&d| d >= 0)
                        .ok_or_else(|| bad("bad shape"))
                })
                .collect::<Result<_, _>>()?;
            let off = info
                .get("data_offsets")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("no offsets"))?;
            let (s, e) = match off.as_slice() {
                [s, e] => (
                    s.as_u64().unwrap_or(u64::MAX) as usize,
                    e.as_u64().unwrap_or(0) as usize,
                ),
                _ => return Err(bad("bad offsets")),
            };
            if s > e || e > data.len() {
                return Err(bad("offsets outside the file"));
            }
            let raw = &data[s..e];
            let n = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
                .ok_or_else(|| bad("too large"))?;
            let tensor_data = match dt {
                "F32" if raw.len() == 4 * n => Data::F32(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                        .collect(),
                ),
                "F64" if raw.len() == 8 * n => Data::F64(
                    raw.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().expect("8")))
                        .collect(),
                ),
                _ => {
                    return Err(bad(&format!(
                        "{dt} with {} bytes for {n} values",
                        raw.len()
                    )))
                }
            };
            let t = Tensor {
                dims,
                data: tensor_data,
            };
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
