//! netFound's model configuration, read from a Hugging Face `config.json` written by
//! netFound's `save_pretrained` (`model_type = "netFound"`), and the exact parameter set of
//! its checkpoints: names (netFound's keys), shapes (PyTorch's `[out, in]`) and counts.
//! `docs/netfound-architecture.md` (sections 1, 5 and 9.5) documents every key and rule.
//!
//! Only the configurations netFound's released checkpoints use are accepted: RoFormer
//! attention with rotary tables, the hierarchical (not flat) encoder, no flash attention,
//! tanh-GELU GeGLU MLPs, four metadata features, payload stripped. Anything else is refused
//! with the key that differs.

use crate::config::{InputLayout, ModelConfig, VocabSpec};
use crate::params::{Init, ParamSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// Hidden width of netFound's metadata MLP (fixed in its code, not in the config).
pub const META_HIDDEN: usize = 1024;
/// Rows of netFound's protocol embedding (fixed in its code).
pub const PROTOCOL_ROWS: usize = 18;
/// Prefix of the base transformer's keys.
pub const BASE: &str = "base_transformer.";

#[derive(Debug, Error, PartialEq)]
pub enum NetfoundConfigError {
    #[error("config.json is not valid JSON: {0}")]
    Json(String),
    #[error("config.json: {key} {why}")]
    Key { key: String, why: String },
}

fn key_err(key: &str, why: impl Into<String>) -> NetfoundConfigError {
    NetfoundConfigError::Key {
        key: key.to_string(),
        why: why.into(),
    }
}

/// How a fine-tuned netFound model's loss is computed (`problem_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    SingleLabelClassification,
    Regression,
    MultiLabelClassification,
}

/// netFound's architecture settings, as its `config.json` gives them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetfoundConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    /// GeGLU width `I` (`mlp.Wi` has `2I` rows).
    pub intermediate: usize,
    pub vocab_size: usize,
    /// Bursts per flow; the flow rotary table has `max_bursts + 1` rows.
    pub max_bursts: usize,
    /// Slots per burst, CLS included (tokenizer truncation).
    pub max_burst_length: usize,
    /// Rows of the burst rotary table.
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    /// eps of the embedding LayerNorm, the attention post-LN and the LM head's LN.
    pub layer_norm_eps: f64,
    /// eps of the MLP pre-LN.
    pub norm_eps: f64,
    /// Whether the MLP pre-LN has a bias.
    pub norm_bias: bool,
    /// Whether the GeGLU projections have biases.
    pub mlp_bias: bool,
    /// Whether the model carries the language-model and pretraining heads
    /// (`netFoundLanguageModelling`).
    pub lm_heads: bool,
    /// Classes of the fine-tuning head; 0 = none.
    pub num_labels: usize,
    pub problem_type: Option<ProblemType>,
    /// Pretraining: netFound's rates and loss weights (`mlm_probability`, `swap_rate`,
    /// `*_loss_weight`, `no_*`).
    pub mlm_probability: f64,
    pub swap_rate: f64,
    pub loss_weights: NetfoundLossWeights,
    /// The `config.json` as read (written back on export).
    pub hf_config: Value,
}

/// netFound's pretraining loss weights; a disabled term (`no_mlm`…) has weight 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetfoundLossWeights {
    pub mlm: f64,
    pub swap: f64,
    pub meta: f64,
    pub direction: f64,
}

fn get<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn usize_key(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<usize, NetfoundConfigError> {
    let v = get(obj, key).ok_or_else(|| key_err(key, "is missing"))?;
    v.as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| key_err(key, format!("must be a non-negative integer, not {v}")))
}

fn f64_key(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    default: Option<f64>,
) -> Result<f64, NetfoundConfigError> {
    match get(obj, key) {
        None => default.ok_or_else(|| key_err(key, "is missing")),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| key_err(key, format!("must be a number, not {v}"))),
    }
}

fn bool_key(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    default: bool,
) -> Result<bool, NetfoundConfigError> {
    match get(obj, key) {
        None => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| key_err(key, format!("must be true or false, not {v}"))),
    }
}

impl NetfoundConfig {
    /// Reads netFound's `config.json`, refusing what netfm does not implement.
    pub fn from_hf_json(text: &str) -> Result<NetfoundConfig, NetfoundConfigError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| NetfoundConfigError::Json(e.to_string()))?;
        let obj = value
            .as_object()
            .ok_or_else(|| NetfoundConfigError::Json("not a JSON object".into()))?;
        match get(obj, "model_type").and_then(Value::as_str) {
            Some("netFound") => {}
            other => {
                return Err(key_err(
                    "model_type",
                    format!("is {other:?}; a netFound checkpoint says \"netFound\""),
                ))
            }
        }
        // Architecture switches netfm implements one side of.
        for (key, want, default, why) in [
            ("roformer", true, true, "false selects RoBERTa attention with absolute positions, which netfm does not implement"),
            ("flat", false, false, "true is netFound's flat (burst-encoder-only) ablation, which netfm does not implement"),
            ("use_flash_attn", false, false, "true selects flash-attention layers with different weights, no rotary embeddings and no post-LayerNorm: another architecture, not implemented"),
            ("rotary_value", false, false, "true applies rotary embeddings to the values too, which netfm does not implement"),
            ("no_meta", false, false, "true drops the metadata embedding, which netfm does not implement"),
            ("is_decoder", false, false, "true makes attention causal; netFound is an encoder"),
            ("strip_payload", true, false, "false keeps payload tokens (109 per burst); netfm's netFound input mode strips them as the released models do"),
        ] {
            if bool_key(obj, key, default)? != want {
                return Err(key_err(key, format!("is {}: {why}", !want)));
            }
        }
        match get(obj, "hidden_activation").and_then(Value::as_str) {
            Some("gelu_new") | None => {}
            Some(other) => {
                return Err(key_err(
                    "hidden_activation",
                    format!("is {other:?}; netfm implements netFound's \"gelu_new\""),
                ))
            }
        }
        let hidden = usize_key(obj, "hidden_size")?;
        let layers = usize_key(obj, "num_hidden_layers")?;
        let heads = usize_key(obj, "num_attention_heads")?;
        let intermediate = usize_key(obj, "intermediate_size")?;
        let vocab_size = usize_key(obj, "vocab_size")?;
        let max_bursts = usize_key(obj, "max_bursts")?;
        let max_burst_length = usize_key(obj, "max_burst_length")?;
        let max_position_embeddings = usize_key(obj, "max_position_embeddings")?;
        let type_vocab_size = match get(obj, "type_vocab_size") {
            None => 2,
            Some(_) => usize_key(obj, "type_vocab_size")?,
        };
        for (v, key) in [
            (hidden, "hidden_size"),
            (layers, "num_hidden_layers"),
            (heads, "num_attention_heads"),
            (intermediate, "intermediate_size"),
            (max_bursts, "max_bursts"),
            (max_burst_length, "max_burst_length"),
        ] {
            if v == 0 {
                return Err(key_err(key, "must be at least 1"));
            }
        }
        if !hidden.is_multiple_of(heads) || !(hidden / heads).is_multiple_of(2) {
            return Err(key_err(
                "num_attention_heads",
                format!("{heads} does not split hidden_size {hidden} into heads of an even width"),
            ));
        }
        let ours = VocabSpec::netfound();
        if vocab_size <= ours.eos as usize {
            return Err(key_err(
                "vocab_size",
                format!(
                    "{vocab_size} does not hold netFound's special ids (CLS {}, MASK {}, EOS {})",
                    ours.cls, ours.mask, ours.eos
                ),
            ));
        }
        if max_position_embeddings < max_burst_length {
            return Err(key_err(
                "max_position_embeddings",
                format!(
                    "{max_position_embeddings} is shorter than max_burst_length {max_burst_length}"
                ),
            ));
        }
        let features = match get(obj, "metaFeatures") {
            None => 4,
            Some(_) => usize_key(obj, "metaFeatures")?,
        };
        if features != 4 {
            return Err(key_err(
                "metaFeatures",
                format!("is {features}; netFound's inputs have 4 metadata features"),
            ));
        }
        let layer_norm_eps = f64_key(obj, "layer_norm_eps", None)?;
        let norm_eps = f64_key(obj, "norm_eps", None)?;
        let tie = bool_key(obj, "tie_word_embeddings", true)?;
        if !tie {
            return Err(key_err(
                "tie_word_embeddings",
                "is false; netFound ties the LM decoder to the word embeddings and netfm implements that",
            ));
        }
        // Which model: the language model (with pretraining heads) or a fine-tuned classifier.
        let archs: Vec<&str> = get(obj, "architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let num_labels = get(obj, "id2label")
            .and_then(Value::as_object)
            .map(|m| m.len())
            .or_else(|| {
                get(obj, "num_labels")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize)
            })
            .unwrap_or(0);
        let finetuned = match archs.as_slice() {
            ["netFoundLanguageModelling"] => false,
            ["netFoundFinetuningModel"] => true,
            [] => num_labels > 0 && !bool_key(obj, "pretraining", true)?,
            other => {
                return Err(key_err(
                    "architectures",
                    format!("is {other:?}; netfm reads netFoundLanguageModelling and netFoundFinetuningModel"),
                ))
            }
        };
        let problem_type = match get(obj, "problem_type").and_then(Value::as_str) {
            None => None,
            Some("single_label_classification") => Some(ProblemType::SingleLabelClassification),
            Some("regression") => Some(ProblemType::Regression),
            Some("multi_label_classification") => Some(ProblemType::MultiLabelClassification),
            Some(other) => return Err(key_err("problem_type", format!("{other:?} is unknown"))),
        };
        if finetuned {
            if num_labels == 0 {
                return Err(key_err(
                    "id2label",
                    "is missing: a fine-tuned model names its classes",
                ));
            }
            match problem_type {
                None | Some(ProblemType::SingleLabelClassification) => {}
                Some(p) => {
                    return Err(key_err(
                        "problem_type",
                        format!("{p:?}: netfm fine-tunes and predicts single-label classifiers"),
                    ))
                }
            }
        }
        let w = |key: &str, off: &str| -> Result<f64, NetfoundConfigError> {
            Ok(if bool_key(obj, off, false)? {
                0.0
            } else {
                f64_key(obj, key, Some(1.0))?
            })
        };
        let loss_weights = NetfoundLossWeights {
            mlm: w("mlm_loss_weight", "no_mlm")?,
            swap: w("swap_loss_weight", "no_swapped_bursts")?,
            meta: w("metadata_loss_weight", "no_metadata_loss")?,
            direction: w("direction_loss_weight", "no_direction_loss")?,
        };
        Ok(NetfoundConfig {
            hidden,
            layers,
            heads,
            intermediate,
            vocab_size,
            max_bursts,
            max_burst_length,
            max_position_embeddings,
            type_vocab_size,
            layer_norm_eps,
            norm_eps,
            norm_bias: bool_key(obj, "norm_bias", false)?,
            mlp_bias: bool_key(obj, "mlp_bias", false)?,
            lm_heads: !finetuned,
            num_labels: if finetuned { num_labels } else { 0 },
            problem_type,
            mlm_probability: f64_key(obj, "mlm_probability", Some(0.3))?,
            swap_rate: f64_key(obj, "swap_rate", Some(0.5))?,
            loss_weights,
            hf_config: value.clone(),
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// netfm's summary of this model ([`ModelConfig`] with `netfound` set): the shapes the
    /// batch builders and jobs read.
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            size: format!("netfound-{}x{}", self.hidden, self.layers),
            hidden: self.hidden,
            layers: self.layers,
            heads: self.heads,
            ffn: self.intermediate,
            max_bursts: self.max_bursts,
            burst_len: self.max_burst_length,
            num_classes: self.num_labels,
            layer_norm_eps: self.layer_norm_eps,
            vocab: VocabSpec {
                size: self.vocab_size as u32,
                ..VocabSpec::netfound()
            },
            layout: InputLayout::Dense,
            netfound: Some(Box::new(self.clone())),
        }
    }

    /// Every parameter of the model as netFound stores it, in a fixed order: the base
    /// transformer (dead tables included), then the LM and pretraining heads when
    /// `lm_heads`, then the fine-tuning head when `num_labels > 0`.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let (h, i, d) = (self.hidden, self.intermediate, self.head_dim());
        let mut out = Vec::new();
        let mut push = |name: String, dims: &[usize], init: Init| {
            let decay = dims.len() >= 2 && !matches!(init, Init::Ones | Init::Zeros);
            out.push(ParamSpec {
                name,
                dims: dims.iter().map(|&x| x as i64).collect(),
                init,
                decay,
            });
        };
        let n = Init::Normal(0.02);
        let e = format!("{BASE}embeddings.");
        push(
            format!("{e}word_embeddings.weight"),
            &[self.vocab_size, h],
            n,
        );
        push(
            format!("{e}token_type_embeddings.weight"),
            &[self.type_vocab_size, h],
            n,
        );
        push(
            format!("{e}metaEmbeddingLayer1.weight"),
            &[META_HIDDEN, 4],
            n,
        );
        push(
            format!("{e}metaEmbeddingLayer1.bias"),
            &[META_HIDDEN],
            Init::Zeros,
        );
        push(
            format!("{e}metaEmbeddingLayer2.weight"),
            &[h, META_HIDDEN],
            n,
        );
        push(format!("{e}metaEmbeddingLayer2.bias"), &[h], Init::Zeros);
        push(format!("{e}protoEmbedding.weight"), &[PROTOCOL_ROWS, h], n);
        push(format!("{e}compressEmbeddings.weight"), &[h, 3 * h], n);
        push(format!("{e}compressEmbeddings.bias"), &[h], Init::Zeros);
        push(format!("{e}LayerNorm.weight"), &[h], Init::Ones);
        push(format!("{e}LayerNorm.bias"), &[h], Init::Zeros);
        push(
            format!("{BASE}encoder.burst_positions.weight"),
            &[self.max_position_embeddings, d],
            n,
        );
        push(
            format!("{BASE}encoder.flow_positions.weight"),
            &[self.max_bursts + 1, d],
            n,
        );
        for l in 0..self.layers {
            for enc in ["burst_encoder", "flow_encoder"] {
                let p = format!("{BASE}encoder.layer.{l}.{enc}.");
                for qkv in ["query", "key", "value"] {
                    push(format!("{p}attention.self.{qkv}.weight"), &[h, h], n);
                    push(format!("{p}attention.self.{qkv}.bias"), &[h], Init::Zeros);
                }
                push(format!("{p}attention.output.dense.weight"), &[h, h], n);
                push(format!("{p}attention.output.dense.bias"), &[h], Init::Zeros);
                push(
                    format!("{p}attention.output.LayerNorm.weight"),
                    &[h],
                    Init::Ones,
                );
                push(
                    format!("{p}attention.output.LayerNorm.bias"),
                    &[h],
                    Init::Zeros,
                );
                push(format!("{p}mlp_norm.weight"), &[h], Init::Ones);
                if self.norm_bias {
                    push(format!("{p}mlp_norm.bias"), &[h], Init::Zeros);
                }
                push(format!("{p}mlp.Wi.weight"), &[2 * i, h], n);
                if self.mlp_bias {
                    push(format!("{p}mlp.Wi.bias"), &[2 * i], Init::Zeros);
                }
                push(format!("{p}mlp.Wo.weight"), &[h, i], n);
                if self.mlp_bias {
                    push(format!("{p}mlp.Wo.bias"), &[h], Init::Zeros);
                }
            }
        }
        push(self.dead_position_key(), &[self.max_bursts + 1, h], n);
        if self.lm_heads {
            push("lm_head.dense.weight".into(), &[h, h], n);
            push("lm_head.dense.bias".into(), &[h], Init::Zeros);
            push("lm_head.layer_norm.weight".into(), &[h], Init::Ones);
            push("lm_head.layer_norm.bias".into(), &[h], Init::Zeros);
            push("lm_head.bias".into(), &[self.vocab_size], Init::Zeros);
        }
        if self.lm_heads || self.num_labels > 0 {
            push("attentivePooling.lin_proj.weight".into(), &[h, h], n);
            push("attentivePooling.lin_proj.bias".into(), &[h], Init::Zeros);
            push("attentivePooling.v.weight".into(), &[1, h], n);
        }
        if self.lm_heads {
            push("swappedClassifierHiddenLayer.weight".into(), &[2, h], n);
            push(
                "swappedClassifierHiddenLayer.bias".into(),
                &[2],
                Init::Zeros,
            );
            push("linearMetadataPred.weight".into(), &[3, h], n);
            push("linearMetadataPred.bias".into(), &[3], Init::Zeros);
            push("dirPred.weight".into(), &[2, h], n);
            push("dirPred.bias".into(), &[2], Init::Zeros);
        }
        if self.num_labels > 0 {
            push("hiddenLayer.weight".into(), &[h, h], n);
            push("hiddenLayer.bias".into(), &[h], Init::Zeros);
            push("hiddenLayer2.weight".into(), &[h, h], n);
            push("hiddenLayer2.bias".into(), &[h], Init::Zeros);
            push("classifier.weight".into(), &[self.num_labels, h], n);
            push("classifier.bias".into(), &[self.num_labels], Init::Zeros);
        }
        out
    }

    /// The one stored copy of the dead burst-position table (tied across layers; netFound's
    /// `save_pretrained` keeps the last layer's name).
    pub fn dead_position_key(&self) -> String {
        format!(
            "{BASE}encoder.layer.{}.position_embeddings.weight",
            self.layers - 1
        )
    }

    /// Whether `name` is a parameter no output depends on (kept only so an export can write
    /// the checkpoint back): the token-type table and the burst-position tables.
    pub fn is_dead(name: &str) -> bool {
        name == format!("{BASE}embeddings.token_type_embeddings.weight")
            || (name.starts_with(&format!("{BASE}encoder.layer."))
                && name.ends_with(".position_embeddings.weight"))
    }

    /// Whether `name` is a rotary table: stored, frozen (netFound never trains them).
    pub fn is_rotary(name: &str) -> bool {
        name == format!("{BASE}encoder.burst_positions.weight")
            || name == format!("{BASE}encoder.flow_positions.weight")
    }

    /// The element count of [`Self::param_specs`] (netFound's `num_parameters()`, the tied
    /// decoder counted once).
    pub fn param_count(&self) -> usize {
        self.param_specs().iter().map(ParamSpec::numel).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_SIZE: &str = r#"{"architectures":["netFoundLanguageModelling"],"model_type":"netFound",
      "hidden_size":64,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":96,
      "vocab_size":65600,"max_bursts":12,"max_burst_length":73,"max_position_embeddings":73,
      "layer_norm_eps":1e-12,"norm_eps":1e-5,"roformer":true,"strip_payload":true,
      "use_flash_attn":false,"flat":false,"rotary_value":false,"no_meta":false,
      "hidden_activation":"gelu_new","type_vocab_size":2,"metaFeatures":4}"#;

    #[test]
    fn counts_the_test_checkpoint_and_refuses_other_architectures() {
        let c = NetfoundConfig::from_hf_json(TEST_SIZE).unwrap();
        assert_eq!(c.param_count(), 4_502_087);
        assert!(c.lm_heads);
        let mut v: Value = serde_json::from_str(TEST_SIZE).unwrap();
        for (k, bad) in [
            ("use_flash_attn", Value::Bool(true)),
            ("roformer", Value::Bool(false)),
            ("flat", Value::Bool(true)),
            ("model_type", Value::String("bert".into())),
            ("hidden_activation", Value::String("relu".into())),
            ("num_attention_heads", Value::from(3)),
            ("tie_word_embeddings", Value::Bool(false)),
        ] {
            let orig = v[k].clone();
            v[k] = bad;
            let e = NetfoundConfig::from_hf_json(&v.to_string()).unwrap_err();
            match e {
                NetfoundConfigError::Key { key, .. } => assert_eq!(key, k),
                other => panic!("{k}: {other:?}"),
            }
            if orig.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = orig;
            }
        }
        v.as_object_mut().unwrap().remove("layer_norm_eps");
        assert!(NetfoundConfig::from_hf_json(&v.to_string()).is_err());
    }
}
