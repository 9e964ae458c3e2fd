//! The native dataset's burst columns — `burst_tokens` (`list<list<uint16>>`) and
//! `directions`, `bytes`, `iats`, `counts` (`list<bool|uint32|uint64|uint32>`) — encoded
//! into Parquet pages straight from the flows.
//!
//! Through Arrow, every token and burst value would be copied into a list array, given a
//! repetition and a definition level one by one, and run through the generic column writer
//! value by value: most of the native writer's time, for columns whose structure is known
//! up front. Here a burst of n tokens becomes two level runs (its first token's repetition
//! level, then n - 1 times level 2; n times the full definition level) and its tokens are
//! widened to the column's INT32 values; a flow's n bursts become two level runs in each of
//! the other four columns and n values. The pages are ordinary Parquet v1 data pages — RLE
//! levels, PLAIN values (booleans bit-packed), zstd — cut at row boundaries, so every
//! reader sees exactly what Arrow's writer would have written for the same rows (the tests
//! read them back with parquet-rs and pyarrow). One zstd context, the caller's, compresses
//! every page.
//!
//! Levels of `optional group burst_tokens (LIST) { repeated group list { optional group
//! item (LIST) { repeated group list { optional int32 item (INT(16, false)) } } } }`:
//! definition 1 = a flow without bursts, 3 = a burst without tokens, 5 = a token;
//! repetition 0 = a flow's first entry, 1 = a later burst's first entry, 2 = a burst's
//! later token. Levels of `optional group directions (LIST) { repeated group list {
//! optional boolean item } }` (and the other three alike): definition 1 = a flow without
//! bursts, 3 = a burst's value; repetition 0 = a flow's first burst, 1 = a later one. (No
//! flow, burst or value is ever null.)

use bytes::Bytes;
use netfm_tokenizer::TokenizedFlow;
use parquet::basic::{Compression, Encoding, PageType, Type as PhysicalType, ZstdLevel};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, PageEncodingStats};
use parquet::file::statistics::Statistics;
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

/// Definition level of a flow without bursts.
const DEF_NO_BURSTS: u8 = 1;
/// Definition level of a burst without tokens.
const DEF_NO_TOKENS: u8 = 3;
/// Definition level of a token.
const DEF_TOKEN: u8 = 5;
const MAX_DEF: i16 = 5;
const MAX_REP: i16 = 2;
/// Definition level of a flow without bursts in a per-burst column.
const DEF_NO_VALUES: u8 = 1;
/// Definition level of a burst's value in a per-burst column.
const DEF_VALUE: u8 = 3;
const MAX_DEF_PER_BURST: i16 = 3;
const MAX_REP_PER_BURST: i16 = 1;

/// A zstd context for [`TokenColumn`] and [`BurstColumn`] pages.
pub type Compressor = zstd::bulk::Compressor<'static>;

/// A zstd context at `level`.
pub fn compressor(level: ZstdLevel) -> Result<Compressor, ParquetError> {
    zstd::bulk::Compressor::new(level.compression_level())
        .map_err(|e| ParquetError::External(Box::new(e)))
}

/// Levels as RLE runs of the Parquet RLE/bit-packing hybrid (every run an RLE run; levels
/// here fit one byte).
#[derive(Default)]
struct LevelRuns {
    out: Vec<u8>,
    value: u8,
    run: u64,
}

impl LevelRuns {
    fn push(&mut self, value: u8, n: u64) {
        if n == 0 {
            return;
        }
        if self.run > 0 && value == self.value {
            self.run += n;
        } else {
            self.flush_run();
            self.value = value;
            self.run = n;
        }
    }

    fn flush_run(&mut self) {
        if self.run == 0 {
            return;
        }
        // Run header: ULEB128 of (count << 1), low bit 0 = RLE run; then the value.
        let mut header = self.run << 1;
        loop {
            let byte = (header & 0x7f) as u8;
            header >>= 7;
            if header == 0 {
                self.out.push(byte);
                break;
            }
            self.out.push(byte | 0x80);
        }
        self.out.push(self.value);
        self.run = 0;
    }

    /// Bytes the levels take in a v1 data page (length-prefixed), once the open run is
    /// flushed.
    fn page_len(&mut self) -> usize {
        self.flush_run();
        4 + self.out.len()
    }

    /// Writes the levels, length-prefixed as a v1 data page stores them, at the start of
    /// `to` (which [`LevelRuns::page_len`] sized), and starts over.
    fn drain_to(&mut self, to: &mut [u8]) {
        self.flush_run();
        let n = self.out.len();
        to[..4].copy_from_slice(&(n as u32).to_le_bytes());
        to[4..4 + n].copy_from_slice(&self.out);
        self.out.clear();
    }
}

/// A column chunk's working buffers, kept by the part from one row group to the next so
/// that each chunk does not grow its page buffers from nothing again (a copy of every
/// byte and fresh memory, on every row group).
#[derive(Default)]
pub(super) struct ChunkBuffers {
    values: Vec<u8>,
    rep: Vec<u8>,
    def: Vec<u8>,
    page: Vec<u8>,
    /// Bytes reserved in front of the values for the levels (see [`ChunkPages`]).
    gap: usize,
}

/// Bytes first reserved in front of a page's values for its levels, in a column with levels.
const FIRST_GAP: usize = 4096;

/// The pages of one column chunk being built: the open page's levels and values, and the
/// chunk's finished pages. A page holds only the levels its column has (none for a
/// required flat column).
///
/// A v1 data page is its levels, then its values, compressed together. The values are
/// appended behind a gap of `gap` bytes, and a page's levels are written into the end of
/// the gap, so the page is compressed where it lies instead of being copied together
/// first. Levels larger than the gap are copied together with the values in `page`, once:
/// the gap then grows to hold such levels.
pub(super) struct ChunkPages {
    descr: ColumnDescPtr,
    /// Whether the column has repetition levels (max level above 0), and definition levels.
    has_rep: bool,
    has_def: bool,
    level: ZstdLevel,
    /// Bytes of PLAIN values after which a page is closed (at the next row boundary).
    page_bytes: usize,
    rep: LevelRuns,
    def: LevelRuns,
    /// `gap` reserved bytes, then the open page's PLAIN values.
    pub(super) values: Vec<u8>,
    gap: usize,
    /// Booleans bit-packed into the last byte of `values` (0 when it is full).
    bits: u8,
    /// Level entries of the open page.
    page_entries: u64,
    page: Vec<u8>,
    chunk: TrackedWrite<Vec<u8>>,
    pages: i32,
    num_values: i64,
    uncompressed: i64,
    compressed: i64,
    rows: u64,
}

impl ChunkPages {
    /// A chunk of `descr` working in `buffers` (empty ones, or those of a closed chunk).
    pub(super) fn new(
        descr: ColumnDescPtr,
        level: ZstdLevel,
        page_bytes: usize,
        max_def: i16,
        max_rep: i16,
        physical: PhysicalType,
        buffers: ChunkBuffers,
    ) -> Result<Self, ParquetError> {
        if descr.max_def_level() != max_def
            || descr.max_rep_level() != max_rep
            || descr.physical_type() != physical
        {
            return Err(ParquetError::General(format!(
                "column {} is {:?} with levels (def {}, rep {}), expected {physical:?} with \
                 ({max_def}, {max_rep})",
                descr.path(),
                descr.physical_type(),
                descr.max_def_level(),
                descr.max_rep_level()
            )));
        }
        let ChunkBuffers {
            mut values,
            mut rep,
            mut def,
            page,
            gap,
        } = buffers;
        let gap = match (max_def > 0 || max_rep > 0, gap) {
            (false, _) => 0,
            (true, 0) => FIRST_GAP,
            (true, gap) => gap,
        };
        values.clear();
        values.resize(gap, 0);
        rep.clear();
        def.clear();
        Ok(ChunkPages {
            has_rep: max_rep > 0,
            has_def: max_def > 0,
            descr,
            level,
            page_bytes: page_bytes.max(1),
            rep: LevelRuns {
                out: rep,
                ..LevelRuns::default()
            },
            def: LevelRuns {
                out: def,
                ..LevelRuns::default()
            },
            values,
            gap,
            bits: 0,
            page_entries: 0,
            page,
            chunk: TrackedWrite::new(Vec::new()),
            pages: 0,
            num_values: 0,
            uncompressed: 0,
            compressed: 0,
            rows: 0,
        })
    }

    /// Appends the levels of `n` (at least 1) level entries: the first repeated at
    /// `first_rep`, the rest at `rest_rep`, all defined to `def`.
    fn entries(&mut self, first_rep: u8, rest_rep: u8, def: u8, n: u64) {
        self.rep.push(first_rep, 1);
        self.rep.push(rest_rep, n - 1);
        self.def.push(def, n);
        self.page_entries += n;
    }

    /// Counts one entry of a flat column (no repetition), defined to `def` (ignored for a
    /// required column, which has no definition levels).
    pub(super) fn flat_entry(&mut self, def: u8) {
        if self.has_def {
            self.def.push(def, 1);
        }
        self.page_entries += 1;
    }

    /// Appends one PLAIN boolean (bit-packed, least significant bit first).
    fn push_bool(&mut self, b: bool) {
        if self.bits == 0 {
            self.values.push(0);
        }
        if b {
            if let Some(last) = self.values.last_mut() {
                *last |= 1 << self.bits;
            }
        }
        self.bits = (self.bits + 1) % 8;
    }

    /// Ends a row; closes the page once it holds `page_bytes` of values.
    pub(super) fn end_row(&mut self, zstd: &mut Compressor) -> Result<(), ParquetError> {
        self.rows += 1;
        if self.values.len() - self.gap >= self.page_bytes {
            self.flush_page(zstd)?;
        }
        Ok(())
    }

    fn flush_page(&mut self, zstd: &mut Compressor) -> Result<(), ParquetError> {
        if self.page_entries == 0 {
            return Ok(());
        }
        let entries = u32::try_from(self.page_entries).map_err(|_| {
            ParquetError::General(format!(
                "{} level entries in one {} page",
                self.page_entries,
                self.descr.path()
            ))
        })?;
        let rep_len = if self.has_rep { self.rep.page_len() } else { 0 };
        let def_len = if self.has_def { self.def.page_len() } else { 0 };
        let levels = rep_len + def_len;
        let body: &[u8] = if levels <= self.gap {
            // The levels go into the end of the gap: the page lies in `values`.
            let at = self.gap - levels;
            if self.has_rep {
                self.rep.drain_to(&mut self.values[at..]);
            }
            if self.has_def {
                self.def.drain_to(&mut self.values[at + rep_len..]);
            }
            &self.values[at..]
        } else {
            self.page.clear();
            self.page.resize(levels, 0);
            if self.has_rep {
                self.rep.drain_to(&mut self.page);
            }
            if self.has_def {
                self.def.drain_to(&mut self.page[rep_len..]);
            }
            self.page.extend_from_slice(&self.values[self.gap..]);
            &self.page
        };
        let uncompressed = body.len();
        let compressed = zstd
            .compress(body)
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        if levels > self.gap {
            // Room for such levels from the next page on.
            self.gap = levels + levels / 4;
        }
        self.values.clear();
        self.values.resize(self.gap, 0);
        self.bits = 0;
        let page = Page::DataPage {
            buf: Bytes::from(compressed),
            num_values: entries,
            encoding: Encoding::PLAIN,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let spec = SerializedPageWriter::new(&mut self.chunk)
            .write_page(CompressedPage::new(page, uncompressed))?;
        self.pages += 1;
        self.num_values += i64::from(entries);
        self.uncompressed += spec.uncompressed_size as i64;
        self.compressed += spec.compressed_size as i64;
        self.page_entries = 0;
        Ok(())
    }

    /// Closes the chunk: its bytes (pages from offset 0) and what the row group writer
    /// needs to splice them in. Its working buffers go to `spare`, for the next chunk.
    fn close(
        self,
        zstd: &mut Compressor,
        spare: &mut ChunkBuffers,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        self.close_with(zstd, None, None, spare)
    }

    /// [`ChunkPages::close`] with the chunk's statistics and, for a byte array column, the
    /// bytes of its values (Parquet's size statistics).
    pub(super) fn close_with(
        mut self,
        zstd: &mut Compressor,
        statistics: Option<Statistics>,
        unencoded_byte_array_bytes: Option<i64>,
        spare: &mut ChunkBuffers,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        self.flush_page(zstd)?;
        *spare = ChunkBuffers {
            values: std::mem::take(&mut self.values),
            rep: std::mem::take(&mut self.rep.out),
            def: std::mem::take(&mut self.def.out),
            page: std::mem::take(&mut self.page),
            gap: self.gap,
        };
        let mut metadata = ColumnChunkMetaData::builder(self.descr.clone())
            .set_compression(Compression::ZSTD(self.level))
            .set_encodings(vec![Encoding::PLAIN, Encoding::RLE])
            .set_page_encoding_stats(vec![PageEncodingStats {
                page_type: PageType::DATA_PAGE,
                encoding: Encoding::PLAIN,
                count: self.pages,
            }])
            .set_total_compressed_size(self.compressed)
            .set_total_uncompressed_size(self.uncompressed)
            .set_num_values(self.num_values)
            .set_data_page_offset(0)
            .set_unencoded_byte_array_data_bytes(unencoded_byte_array_bytes);
        if let Some(statistics) = statistics {
            metadata = metadata.set_statistics(statistics);
        }
        let metadata = metadata.build()?;
        let bytes = self.chunk.into_inner()?;
        let close = ColumnCloseResult {
            bytes_written: bytes.len() as u64,
            rows_written: self.rows,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: None,
        };
        Ok((Bytes::from(bytes), close))
    }
}

/// One row group's `burst_tokens` column chunk, built flow by flow.
pub struct TokenColumn {
    pages: ChunkPages,
}

impl TokenColumn {
    /// A column chunk for `descr`, which must be the `burst_tokens` leaf of
    /// [`super::parquet::native_schema`].
    pub(super) fn new(
        descr: ColumnDescPtr,
        level: ZstdLevel,
        page_bytes: usize,
        buffers: ChunkBuffers,
    ) -> Result<Self, ParquetError> {
        Ok(TokenColumn {
            pages: ChunkPages::new(
                descr,
                level,
                page_bytes,
                MAX_DEF,
                MAX_REP,
                PhysicalType::INT32,
                buffers,
            )?,
        })
    }

    /// Rows (flows) appended to this chunk.
    pub fn rows(&self) -> u64 {
        self.pages.rows
    }

    /// Appends one flow's row.
    pub fn push(
        &mut self,
        flow: &TokenizedFlow,
        zstd: &mut Compressor,
    ) -> Result<(), ParquetError> {
        let c = &mut self.pages;
        let mut first = true;
        for (_, tokens) in flow.bursts_with_tokens() {
            let rep = if first { 0 } else { 1 };
            first = false;
            if tokens.is_empty() {
                c.entries(rep, rep, DEF_NO_TOKENS, 1);
                continue;
            }
            c.entries(rep, 2, DEF_TOKEN, tokens.len() as u64);
            // Widened eight at a time through a stack buffer (one vectorized widening and
            // one copy each), the rest one by one.
            c.values.reserve(tokens.len() * 4);
            let mut eights = tokens.chunks_exact(8);
            for eight in &mut eights {
                let mut wide = [0u8; 32];
                for (slot, &t) in wide.chunks_exact_mut(4).zip(eight) {
                    slot.copy_from_slice(&u32::from(t).to_le_bytes());
                }
                c.values.extend_from_slice(&wide);
            }
            for &t in eights.remainder() {
                c.values.extend_from_slice(&u32::from(t).to_le_bytes());
            }
        }
        if first {
            c.entries(0, 0, DEF_NO_BURSTS, 1);
        }
        c.end_row(zstd)
    }

    /// Closes the chunk: its bytes (pages from offset 0) and what the row group writer
    /// needs to splice them in. Its working buffers go to `spare`, for the next chunk.
    pub(super) fn close(
        self,
        zstd: &mut Compressor,
        spare: &mut ChunkBuffers,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        self.pages.close(zstd, spare)
    }
}

/// Which per-burst column a [`BurstColumn`] holds, in the native schema's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BurstField {
    Directions,
    Bytes,
    Iats,
    Counts,
}

impl BurstField {
    /// The four, in the native schema's order (right after `burst_tokens`).
    pub const ALL: [BurstField; 4] = [
        BurstField::Directions,
        BurstField::Bytes,
        BurstField::Iats,
        BurstField::Counts,
    ];

    fn physical(self) -> PhysicalType {
        match self {
            BurstField::Directions => PhysicalType::BOOLEAN,
            BurstField::Bytes | BurstField::Counts => PhysicalType::INT32,
            BurstField::Iats => PhysicalType::INT64,
        }
    }
}

/// One row group's column chunk of `directions`, `bytes`, `iats` or `counts`: one value
/// per burst, built flow by flow.
pub struct BurstColumn {
    field: BurstField,
    pages: ChunkPages,
}

impl BurstColumn {
    /// A column chunk for `descr`, which must be `field`'s leaf of
    /// [`super::parquet::native_schema`].
    pub(super) fn new(
        descr: ColumnDescPtr,
        field: BurstField,
        level: ZstdLevel,
        page_bytes: usize,
        buffers: ChunkBuffers,
    ) -> Result<Self, ParquetError> {
        Ok(BurstColumn {
            field,
            pages: ChunkPages::new(
                descr,
                level,
                page_bytes,
                MAX_DEF_PER_BURST,
                MAX_REP_PER_BURST,
                field.physical(),
                buffers,
            )?,
        })
    }

    /// Appends one flow's row.
    pub fn push(
        &mut self,
        flow: &TokenizedFlow,
        zstd: &mut Compressor,
    ) -> Result<(), ParquetError> {
        let c = &mut self.pages;
        let n = flow.bursts.len() as u64;
        if n == 0 {
            c.entries(0, 0, DEF_NO_VALUES, 1);
            return c.end_row(zstd);
        }
        c.entries(0, 1, DEF_VALUE, n);
        match self.field {
            BurstField::Directions => {
                for b in &flow.bursts {
                    c.push_bool(b.forward);
                }
            }
            BurstField::Bytes => {
                for b in &flow.bursts {
                    c.values.extend_from_slice(&b.bytes.to_le_bytes());
                }
            }
            BurstField::Iats => {
                for b in &flow.bursts {
                    c.values.extend_from_slice(&b.iat_us.to_le_bytes());
                }
            }
            BurstField::Counts => {
                for b in &flow.bursts {
                    c.values.extend_from_slice(&b.count.to_le_bytes());
                }
            }
        }
        c.end_row(zstd)
    }

    /// Closes the chunk (see [`TokenColumn::close`]).
    pub(super) fn close(
        self,
        zstd: &mut Compressor,
        spare: &mut ChunkBuffers,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        self.pages.close(zstd, spare)
    }
}
