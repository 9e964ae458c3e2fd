//! The five burst columns both dataset formats share, in netFound's layout:
//! `burst_tokens list<list<uint16>>`, `directions list<bool>`, `bytes list<uint32>`,
//! `iats list<uint64>`, `counts list<uint32>` (list items named `item`, nullable, as
//! pyarrow writes them).

use arrow::array::{
    ArrayRef, BooleanBuilder, ListBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field};
use netfm_tokenizer::TokenizedFlow;
use std::sync::Arc;

fn list_of(dt: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", dt, true)))
}

/// Most tokens one record batch holds. Arrow's list offsets are 32-bit, so a batch's
/// `burst_tokens` must stay below 2^31 values; the writers start a new batch before a flow
/// would cross this (2^30, well clear of the limit). One flow holds far fewer: the CLI caps
/// `--max-bursts` x `--max-packets-per-burst` (see [`MAX_PACKETS_PER_FLOW`]).
pub const MAX_BATCH_TOKENS: usize = 1 << 30;

/// Most packets a flow may keep (`max_bursts` x `max_packets_per_burst`): with at most 38
/// tokens a packet, one flow stays under 40 M tokens (80 MB), far below
/// [`MAX_BATCH_TOKENS`].
pub const MAX_PACKETS_PER_FLOW: usize = 1 << 20;

/// The burst columns' fields, in order.
pub fn burst_fields() -> Vec<Field> {
    vec![
        Field::new("burst_tokens", list_of(list_of(DataType::UInt16)), true),
        Field::new("directions", list_of(DataType::Boolean), true),
        Field::new("bytes", list_of(DataType::UInt32), true),
        Field::new("iats", list_of(DataType::UInt64), true),
        Field::new("counts", list_of(DataType::UInt32), true),
    ]
}

/// Accumulates the burst columns row by row.
pub struct BurstColumnsBuilder {
    tokens: ListBuilder<ListBuilder<UInt16Builder>>,
    directions: ListBuilder<BooleanBuilder>,
    bytes: ListBuilder<UInt32Builder>,
    iats: ListBuilder<UInt64Builder>,
    counts: ListBuilder<UInt32Builder>,
    /// Tokens appended so far.
    token_count: usize,
}

impl BurstColumnsBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        BurstColumnsBuilder {
            tokens: ListBuilder::with_capacity(
                ListBuilder::new(UInt16Builder::with_capacity(rows * 64)),
                rows,
            ),
            directions: ListBuilder::with_capacity(BooleanBuilder::new(), rows),
            bytes: ListBuilder::with_capacity(UInt32Builder::new(), rows),
            iats: ListBuilder::with_capacity(UInt64Builder::new(), rows),
            counts: ListBuilder::with_capacity(UInt32Builder::new(), rows),
            token_count: 0,
        }
    }

    /// Tokens appended so far (the `burst_tokens` values).
    pub fn token_count(&self) -> usize {
        self.token_count
    }

    pub fn append(&mut self, flow: &TokenizedFlow) {
        self.token_count += flow.tokens.len();
        for (b, tokens) in flow.bursts_with_tokens() {
            self.tokens.values().values().append_slice(tokens);
            self.tokens.values().append(true);
            self.directions.values().append_value(b.forward);
            self.bytes.values().append_value(b.bytes);
            self.iats.values().append_value(b.iat_us);
            self.counts.values().append_value(b.count);
        }
        self.tokens.append(true);
        self.directions.append(true);
        self.bytes.append(true);
        self.iats.append(true);
        self.counts.append(true);
    }

    /// The five columns in [`burst_fields`] order.
    pub fn finish(mut self) -> [ArrayRef; 5] {
        [
            Arc::new(self.tokens.finish()),
            Arc::new(self.directions.finish()),
            Arc::new(self.bytes.finish()),
            Arc::new(self.iats.finish()),
            Arc::new(self.counts.finish()),
        ]
    }
}
