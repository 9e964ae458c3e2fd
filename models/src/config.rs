//! Model configurations: the named sizes, validation, and the vocabulary a model expects.

use netfm_tokenizer::vocab;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Burst metadata features the model reads per burst: direction (+1 forward, −1 backward),
/// ln(1+bytes), ln(1+packets), ln(1+inter-arrival ms).
pub const META_FEATURES: usize = 4;
/// Metadata targets regressed for masked bursts: the last three features above.
pub const META_TARGETS: usize = 3;
/// Rows of the protocol embedding (IP protocol numbers).
pub const PROTOCOL_VOCAB: usize = 256;

/// The tokenizer vocabulary a model was built for (netfm-tokenizer's `vocab`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VocabSpec {
    pub size: u32,
    pub pad: u32,
    pub cls: u32,
    pub mask: u32,
    pub eos: u32,
    pub token_shift: u32,
}

impl VocabSpec {
    /// netFound's vocabulary, as netfm-tokenizer defines it.
    pub fn netfound() -> VocabSpec {
        VocabSpec {
            size: vocab::VOCAB_SIZE,
            pad: vocab::PAD_ID,
            cls: vocab::CLS_ID,
            mask: vocab::MASK_ID,
            eos: vocab::EOS_ID,
            token_shift: vocab::TOKEN_SHIFT,
        }
    }
}

/// How a batch's bursts are laid out in a graph's inputs. Both layouts compute the same
/// function of the same parameters; a checkpoint runs under either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputLayout {
    /// A `[flows, bursts, tokens]` grid padded to the batch's longest flow and longest
    /// burst: simple, but on real traffic most of its slots are padding.
    Dense,
    /// The batch's present bursts packed end to end into the rows of one `[rows, row_len]`
    /// tensor (attention kept inside each burst by a segment mask), and the cross-burst
    /// attention over each flow's CLS states gathered into `[flows, bursts]`: the cost
    /// follows the real tokens. See `hier`'s module docs for the inputs.
    #[default]
    Packed,
}

/// The hierarchical encoder's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The named size this started from (informational).
    pub size: String,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    /// Bursts per flow (the flow axis).
    pub max_bursts: usize,
    /// Tokens per burst including its leading CLS token (the burst axis).
    pub burst_len: usize,
    /// Flow classes of the classification head; 0 = no classification head.
    pub num_classes: usize,
    pub layer_norm_eps: f64,
    pub vocab: VocabSpec,
    /// The graphs' batch layout (not a property of the weights).
    #[serde(default)]
    pub layout: InputLayout,
    /// netFound's exact architecture ([`crate::netfound_config`]) when the model is one of
    /// netFound's (imported from its checkpoints); `None` for netfm's own encoder
    /// ([`crate::hier`]). The fields above then summarise its shapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netfound: Option<Box<crate::netfound_config::NetfoundConfig>>,
}

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("unknown model size {0:?} (known: tiny, small, netfound-small, base)")]
    UnknownSize(String),
    #[error("hidden size {hidden} is not divisible by {heads} heads")]
    Heads { hidden: usize, heads: usize },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("burst_len {0} leaves no room for tokens after the CLS token")]
    BurstLen(usize),
    #[error(
        "vocabulary size {size} does not hold the special ids (CLS {cls}, MASK {mask}, EOS {eos})"
    )]
    Vocab {
        size: u32,
        cls: u32,
        mask: u32,
        eos: u32,
    },
}

/// Tokens per burst for netfm's default tokenization (TCP: IP 5 + TCP 7 + payload 6 = 18
/// per packet, 6 packets) plus the CLS token.
pub const DEFAULT_BURST_LEN: usize = 1 + 6 * 18;

impl ModelConfig {
    /// A named size: `tiny` (tests), `small` (256 hidden, 4 layers, 4 heads),
    /// `netfound-small` (netFound's small shape: 512/4/4, FFN 768), `base` (768/12/12).
    pub fn named(size: &str) -> Result<ModelConfig, ConfigError> {
        let (hidden, layers, heads, ffn, max_bursts, burst_len) = match size {
            "tiny" => (32, 2, 2, 64, 4, 1 + 2 * 18),
            "small" => (256, 4, 4, 1024, 12, DEFAULT_BURST_LEN),
            "netfound-small" => (512, 4, 4, 768, 12, DEFAULT_BURST_LEN),
            "base" => (768, 12, 12, 3072, 12, DEFAULT_BURST_LEN),
            other => return Err(ConfigError::UnknownSize(other.to_string())),
        };
        Ok(ModelConfig {
            size: size.to_string(),
            hidden,
            layers,
            heads,
            ffn,
            max_bursts,
            burst_len,
            num_classes: 0,
            layer_norm_eps: 1e-5,
            vocab: VocabSpec::netfound(),
            layout: InputLayout::default(),
            netfound: None,
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (v, name) in [
            (self.hidden, "hidden"),
            (self.layers, "layers"),
            (self.heads, "heads"),
            (self.ffn, "ffn"),
            (self.max_bursts, "max_bursts"),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(ConfigError::Heads {
                hidden: self.hidden,
                heads: self.heads,
            });
        }
        if self.burst_len < 2 {
            return Err(ConfigError::BurstLen(self.burst_len));
        }
        let v = &self.vocab;
        if v.cls >= v.size || v.mask >= v.size || v.eos >= v.size {
            return Err(ConfigError::Vocab {
                size: v.size,
                cls: v.cls,
                mask: v.mask,
                eos: v.eos,
            });
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serializes")
    }

    pub fn from_json(s: &str) -> Result<ModelConfig, serde_json::Error> {
        serde_json::from_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_sizes_validate_and_round_trip() {
        for size in ["tiny", "small", "netfound-small", "base"] {
            let c = ModelConfig::named(size).unwrap();
            c.validate().unwrap();
            assert_eq!(ModelConfig::from_json(&c.to_json()).unwrap(), c);
        }
        assert_eq!(
            ModelConfig::named("huge"),
            Err(ConfigError::UnknownSize("huge".into()))
        );
        let mut c = ModelConfig::named("tiny").unwrap();
        c.heads = 3;
        assert!(matches!(c.validate(), Err(ConfigError::Heads { .. })));
        c.heads = 2;
        c.vocab.size = 1000;
        assert!(matches!(c.validate(), Err(ConfigError::Vocab { .. })));
    }
}
