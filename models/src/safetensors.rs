//! Reading safetensors files (<https://github.com/huggingface/safetensors>): an 8-byte
//! little-endian header length, a JSON header naming each tensor's dtype, shape and byte
//! range, then the raw little-endian bytes. Used for netfm's own checkpoints
//! ([`crate::checkpoint`]) and for foreign ones (netFound's Hugging Face `model.safetensors`).
//!
//! Floating-point tensors of F16 and BF16 are widened to F32 (exactly: both are subsets of
//! F32), F32 and F64 kept; I64 kept, I32/I16/I8/U8 widened to I64, BOOL kept. The source dtype
//! of every tensor is reported, so an importer can say what it converted.

use crate::graph::{Data, Tensor};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum SafetensorsError {
    #[error("not a safetensors file: {0}")]
    Format(String),
    #[error("tensor {name}: {why}")]
    Tensor { name: String, why: String },
}

/// A parsed safetensors file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SafeTensors {
    pub tensors: BTreeMap<String, Tensor>,
    /// Each tensor's dtype as the file names it (`F32`, `BF16`, …).
    pub source_dtypes: BTreeMap<String, String>,
    /// The header's `__metadata__` (string values only, as the format prescribes).
    pub metadata: BTreeMap<String, String>,
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Parses `bytes` (the whole file).
pub fn parse(bytes: &[u8]) -> Result<SafeTensors, SafetensorsError> {
    let fmt = |m: &str| SafetensorsError::Format(m.to_string());
    let len = bytes.get(..8).ok_or_else(|| fmt("shorter than 8 bytes"))?;
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(8))
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| fmt("header runs past the end"))?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes[8..end]).map_err(|e| fmt(&format!("header JSON: {e}")))?;
    let data = &bytes[end..];
    let mut out = SafeTensors::default();
    for (name, info) in &header {
        if name == "__metadata__" {
            if let Some(m) = info.as_object() {
                for (k, v) in m {
                    if let Some(s) = v.as_str() {
                        out.metadata.insert(k.clone(), s.to_string());
                    }
                }
            }
            continue;
        }
        let bad = |m: &str| SafetensorsError::Tensor {
            name: name.clone(),
            why: m.to_string(),
        };
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
                s.as_u64().map_or(usize::MAX, |v| v as usize),
                e.as_u64().map_or(0, |v| v as usize),
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
        let width = match dt {
            "F64" | "I64" => 8,
            "F32" | "I32" => 4,
            "F16" | "BF16" | "I16" => 2,
            "I8" | "U8" | "BOOL" => 1,
            other => return Err(bad(&format!("unsupported dtype {other}"))),
        };
        if n.checked_mul(width) != Some(raw.len()) {
            return Err(bad(&format!(
                "{dt} with {} bytes for {n} values",
                raw.len()
            )));
        }
        let data = match dt {
            "F32" => Data::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                    .collect(),
            ),
            "F64" => Data::F64(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8")))
                    .collect(),
            ),
            "F16" => Data::F32(
                raw.chunks_exact(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            "BF16" => Data::F32(
                raw.chunks_exact(2)
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                    .collect(),
            ),
            "I64" => Data::I64(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                    .collect(),
            ),
            "I32" => Data::I64(
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4")) as i64)
                    .collect(),
            ),
            "I16" => Data::I64(
                raw.chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                    .collect(),
            ),
            "I8" => Data::I64(raw.iter().map(|&b| b as i8 as i64).collect()),
            "U8" => Data::I64(raw.iter().map(|&b| b as i64).collect()),
            _ => Data::Bool(raw.iter().map(|&b| b != 0).collect()),
        };
        out.tensors.insert(name.clone(), Tensor { dims, data });
        out.source_dtypes.insert(name.clone(), dt.to_string());
    }
    Ok(out)
}

fn dtype_name(d: &Data) -> &'static str {
    match d {
        Data::F32(_) => "F32",
        Data::F64(_) => "F64",
        Data::I64(_) => "I64",
        Data::Bool(_) => "BOOL",
    }
}

/// Writes `tensors` (in name order) with `metadata` as `__metadata__`; the header is padded
/// with spaces to a multiple of 8 bytes, as the reference implementation does.
pub fn serialize<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut sorted: Vec<(&str, &Tensor)> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            Value::Object(
                metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        );
    }
    let mut data = Vec::new();
    for (name, t) in sorted {
        let bytes = t.data.raw_le();
        let start = data.len();
        data.extend_from_slice(&bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype_name(&t.data), "shape": t.dims, "data_offsets": [start, data.len()]}),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &[(&str, &str, Vec<i64>, Vec<u8>)]) -> Vec<u8> {
        let mut header = Map::new();
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut data = Vec::new();
        for (name, dt, shape, raw) in entries {
            let s = data.len();
            data.extend_from_slice(raw);
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dt, "shape": shape, "data_offsets": [s, data.len()]}),
            );
        }
        let h = serde_json::to_vec(&Value::Object(header)).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(data);
        out
    }

    #[test]
    fn reads_and_widens_dtypes() {
        // 1.0, -2.5, 65504 (f16 max), 2^-24 (smallest f16 subnormal) in F16; the same in BF16.
        let f16: Vec<u8> = [0x3c00u16, 0xc100, 0x7bff, 0x0001]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        let bf16: Vec<u8> = [1.0f32, -2.5, 3.0e38]
            .iter()
            .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        let bytes = file(&[
            ("a", "F16", vec![2, 2], f16),
            ("b", "BF16", vec![3], bf16),
            ("c", "I32", vec![1], (-7i32).to_le_bytes().to_vec()),
        ]);
        let st = parse(&bytes).unwrap();
        assert_eq!(
            st.tensors["a"].data,
            Data::F32(vec![1.0, -2.5, 65504.0, 2f32.powi(-24)])
        );
        let Data::F32(b) = &st.tensors["b"].data else {
            panic!()
        };
        assert_eq!(&b[..2], &[1.0, -2.5]);
        assert!((b[2] / 3.0e38 - 1.0).abs() < 1e-2);
        assert_eq!(st.tensors["c"].data, Data::I64(vec![-7]));
        assert_eq!(st.source_dtypes["b"], "BF16");
        assert_eq!(st.metadata["format"], "pt");
        let again = serialize(
            st.tensors.iter().map(|(k, t)| (k.as_str(), t)),
            &st.metadata,
        );
        let back = parse(&again).unwrap();
        assert_eq!(back.tensors, st.tensors);
        assert_eq!(back.metadata, st.metadata);
        // Damage: truncated, a byte range too short for the shape, unknown dtype.
        assert!(matches!(
            parse(&bytes[..bytes.len() - 1]),
            Err(SafetensorsError::Tensor { .. })
        ));
        assert!(matches!(parse(b"1234"), Err(SafetensorsError::Format(_))));
        let bad = file(&[("x", "F32", vec![2], vec![0; 4])]);
        assert!(parse(&bad).is_err());
        let bad = file(&[("x", "C64", vec![1], vec![0; 8])]);
        assert!(parse(&bad).is_err());
    }
}
