//! The model-side vocabulary: how the raw 16-bit field tokens of a dataset become model
//! input ids. Defined once here; the dataset files (netFound's Arrow schema, netfm's
//! Parquet) always hold raw tokens.
//!
//! Matches netFound's model-side tokenizer (`src/modules/netFoundTokenizer.py`, class
//! `netFoundTokenizer`, and `netFoundConfig` in `src/modules/netFoundConfigBase.py`) at
//! netFound commit 66ebbba34c4354d253d1bc1b48188bbbb48c1a7c:
//!
//! - every raw token is shifted by one (`convert_to_tokens(..., add_one=True)`), so raw
//!   0..=65535 become ids 1..=65536 and id 0 is free for padding;
//! - `pad_token_id = 0`, `bos_token_id = 65537` (the per-burst CLS token prepended to every
//!   burst), `mask_token = 65538`, `eos_token_id = 65540`; 65539 is unused;
//! - the embedding table has `vocab_size = 65600` rows (netFoundConfig's default), which
//!   leaves room above the special ids;
//! - burst metadata: direction `true/false` becomes `1/-1`; `iats` (microseconds in the
//!   dataset) are multiplied by `1e-3` and truncated to int (milliseconds); bytes and
//!   counts are used as stored.

/// Padding id (also the attention-absence value).
pub const PAD_ID: u32 = 0;
/// Added to every raw 16-bit token.
pub const TOKEN_SHIFT: u32 = 1;
/// Lowest id of a shifted raw token.
pub const FIRST_TOKEN_ID: u32 = TOKEN_SHIFT;
/// Highest id of a shifted raw token (raw 65535).
pub const LAST_TOKEN_ID: u32 = u16::MAX as u32 + TOKEN_SHIFT;
/// The per-burst CLS token (netFound's `bos_token_id`).
pub const CLS_ID: u32 = 65537;
/// The masked-token id used by masked token prediction.
pub const MASK_ID: u32 = 65538;
/// netFound's `eos_token_id`.
pub const EOS_ID: u32 = 65540;
/// Rows of the token embedding table (netFoundConfig's `vocab_size`).
pub const VOCAB_SIZE: u32 = 65600;

/// A special (non-field) token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Special {
    Pad,
    Cls,
    Mask,
    Eos,
}

impl Special {
    pub const ALL: [Special; 4] = [Special::Pad, Special::Cls, Special::Mask, Special::Eos];

    pub fn id(self) -> u32 {
        match self {
            Special::Pad => PAD_ID,
            Special::Cls => CLS_ID,
            Special::Mask => MASK_ID,
            Special::Eos => EOS_ID,
        }
    }

    pub fn from_id(id: u32) -> Option<Special> {
        Special::ALL.into_iter().find(|s| s.id() == id)
    }
}

/// What a model id stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vocab {
    /// A raw 16-bit field token.
    Field(u16),
    Special(Special),
    /// Inside the embedding table but never produced (e.g. 65539, 65541..65599).
    Unused,
}

/// Model id of a raw 16-bit token.
pub const fn token_to_id(raw: u16) -> u32 {
    raw as u32 + TOKEN_SHIFT
}

/// Raw 16-bit token of a model id, if it is a field token.
pub fn id_to_token(id: u32) -> Option<u16> {
    if (FIRST_TOKEN_ID..=LAST_TOKEN_ID).contains(&id) {
        u16::try_from(id - TOKEN_SHIFT).ok()
    } else {
        None
    }
}

/// Classifies a model id; None if it is outside the embedding table.
pub fn classify(id: u32) -> Option<Vocab> {
    if id >= VOCAB_SIZE {
        return None;
    }
    Some(match (id_to_token(id), Special::from_id(id)) {
        (Some(t), _) => Vocab::Field(t),
        (None, Some(s)) => Vocab::Special(s),
        (None, None) => Vocab::Unused,
    })
}

/// Model ids of one burst: CLS followed by the shifted raw tokens (netFound's
/// `prepend_to_list(convert_to_tokens(burst, add_one=True), bos_token_id)`).
pub fn burst_input_ids(raw: &[u16]) -> impl Iterator<Item = u32> + '_ {
    std::iter::once(CLS_ID).chain(raw.iter().map(|&t| token_to_id(t)))
}

/// Model value of a burst direction (`1` forward, `-1` backward).
pub fn direction_value(forward: bool) -> i8 {
    if forward {
        1
    } else {
        -1
    }
}

/// Model value of an inter-arrival time: `int(iat_us * 1e-3)` in float64, as netFound's
/// `multiply_burst_values(iats, 1e-3, int)`.
pub fn iat_model_value(iat_us: u64) -> i64 {
    (iat_us as f64 * 1e-3) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_round_trips_every_raw_token() {
        for raw in 0..=u16::MAX {
            let id = token_to_id(raw);
            assert_eq!(id_to_token(id), Some(raw));
            assert_eq!(classify(id), Some(Vocab::Field(raw)));
        }
        assert_eq!(token_to_id(0), 1);
        assert_eq!(token_to_id(u16::MAX), 65536);
    }

    #[test]
    fn specials_do_not_collide_with_field_tokens() {
        for s in Special::ALL {
            assert_eq!(id_to_token(s.id()), None);
            assert_eq!(classify(s.id()), Some(Vocab::Special(s)));
            assert!(s.id() < VOCAB_SIZE);
        }
        assert_eq!(classify(65539), Some(Vocab::Unused));
        assert_eq!(classify(VOCAB_SIZE), None);
    }

    #[test]
    fn burst_ids_start_with_cls() {
        let ids: Vec<u32> = burst_input_ids(&[20, 0, 65535]).collect();
        assert_eq!(ids, vec![CLS_ID, 21, 1, 65536]);
    }

    #[test]
    fn metadata_values() {
        assert_eq!(direction_value(true), 1);
        assert_eq!(direction_value(false), -1);
        assert_eq!(iat_model_value(70_034), 70);
        assert_eq!(iat_model_value(999), 0);
        assert_eq!(iat_model_value(1000), 1);
    }
}
