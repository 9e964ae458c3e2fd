//! netfm's native dataset: one Parquet row per flow (zstd), in a Hive-style directory
//! partitioned by transport, written in parts of bounded size.
//!
//! Layout: `OUT/proto=<tcp|udp|icmp|icmpv6>/part-<shard>-<seq>.parquet`. A part is written
//! under a hidden temporary name (`.part-....parquet.tmp`, which Spark, DuckDB, Polars and
//! pyarrow skip) and renamed once its footer is written, so a reader only ever sees complete
//! files. Memory is bounded by `batch_rows` buffered flows per partition plus one row group
//! in the Parquet encoder.
//!
//! The burst columns keep netFound's names (`burst_tokens`, `directions`, `bytes`, `iats`,
//! `counts`), so code written against netFound's Arrow files reads these too.
//!
//! Every column is encoded into Parquet pages straight from the flows, without Arrow
//! arrays: the flow's own columns by [`FlatColumns`], the five burst columns by
//! [`TokenColumn`] and [`BurstColumn`] (through Arrow's column writers these took most of
//! the writer's time). Each row group's chunks are spliced into the file in leaf order.
//! The file's footer carries the Arrow schema, as Arrow's own writer would write it, so
//! Arrow readers get the schema's exact types back.

use super::burst_columns::{burst_fields, MAX_BATCH_TOKENS};
use super::flat_columns::{flat_leaves, FlatColumns, BURSTS_AT, COLUMNS};
use super::token_column::{
    compressor, BurstColumn, BurstField, ChunkBuffers, Compressor, TokenColumn,
};
use crate::flow::{mix64, FlowRecord};
use arrow::datatypes::{Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::SchemaDescriptor;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the Parquet sink; each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ParquetSinkError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: parquet: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("building record batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("a flow of {tokens} tokens is more than one Arrow record batch can hold ({max}); lower --max-bursts or --max-packets-per-burst")]
    FlowTooLarge { tokens: usize, max: usize },
}

/// The zstd level parts are written at unless set: 3, zstd's own default. Level 1 (the
/// default of Arrow's own Parquet writers) wrote the benchmark dataset about 1% faster end
/// to end into parts about 15% larger (`benches/README.md`); `--zstd-level` chooses.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// The zstd levels `--zstd-level` takes.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

/// Settings of the Parquet sink.
#[derive(Clone, Debug)]
pub struct ParquetSinkConfig {
    pub out_dir: PathBuf,
    /// Flows per part file before a new part starts.
    pub part_rows: usize,
    /// Flows per Parquet row group.
    pub row_group_rows: usize,
    /// Flows buffered per partition before they are encoded.
    pub batch_rows: usize,
    /// zstd level (1-22; [`DEFAULT_ZSTD_LEVEL`] unless set).
    pub zstd_level: i32,
    /// Most tokens per batch of rows handed to the encoder (at most [`MAX_BATCH_TOKENS`]),
    /// so that a batch of long flows stays bounded too.
    pub batch_tokens: usize,
    /// Bytes of values per page of the burst columns (a page ends at the first row
    /// boundary past it).
    pub page_bytes: usize,
    /// Shard tag written into part names (`s0of1`), so shards never collide.
    pub shard_tag: String,
    /// Part sequence numbers this sink uses: `first`, `first + step`, ... Sinks that write
    /// into one directory side by side (the pipeline's parallel writers) take disjoint ones.
    pub part_seq: (u32, u32),
    /// Key-value pairs for every part's footer (the run's settings, the vocabulary).
    pub key_value_metadata: Vec<(String, String)>,
}

impl ParquetSinkConfig {
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        ParquetSinkConfig {
            out_dir: out_dir.into(),
            part_rows: 1_000_000,
            row_group_rows: 16_384,
            batch_rows: 8_192,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            batch_tokens: MAX_BATCH_TOKENS,
            page_bytes: PAGE_BYTES,
            shard_tag: "s0of1".to_string(),
            part_seq: (0, 1),
            key_value_metadata: Vec::new(),
        }
    }
}

/// The schema of a native netfm flow dataset.
/// The schema of a native netfm flow dataset: the flow's own columns
/// ([`flat_columns::COLUMNS`], each field saying what it holds and its unit in its
/// metadata), with netFound's five burst columns after `end_reason`.
pub fn native_schema() -> SchemaRef {
    let meta = |unit: Option<&str>, description: &str| {
        let mut m = std::collections::HashMap::new();
        m.insert("description".to_string(), description.to_string());
        if let Some(u) = unit {
            m.insert("unit".to_string(), u.to_string());
        }
        m
    };
    let mut fields: Vec<Field> = COLUMNS
        .iter()
        .map(|c| {
            Field::new(c.name, c.ty.arrow(), c.nullable).with_metadata(meta(c.unit, c.description))
        })
        .collect();
    let bursts = burst_fields().into_iter().map(|f| {
        let (unit, description) = match f.name().as_str() {
            "burst_tokens" => (
                None,
                "per burst, the raw 16-bit field tokens of its kept packets",
            ),
            "directions" => (None, "per burst, true if it goes from src to dst"),
            "bytes" => (Some("bytes"), "per burst, its IP bytes"),
            "iats" => (
                Some("microseconds"),
                "per burst, the time since the previous burst of its direction",
            ),
            _ => (Some("packets"), "per burst, its packets"),
        };
        f.with_metadata(meta(unit, description))
    });
    fields.splice(BURSTS_AT..BURSTS_AT, bursts);
    Arc::new(Schema::new(fields))
}

/// A flow on its way to the sink, with where it came from.
#[derive(Clone, Copy)]
pub struct NativeRow<'a> {
    pub flow_id: u64,
    pub source: &'a str,
    pub label: Option<&'a str>,
    pub flow: &'a FlowRecord,
}

fn partition_name(protocol: u8) -> &'static str {
    match protocol {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 => "icmpv6",
        _ => "other",
    }
}

/// Appends `a` as text, exactly as its `Display` writes it, without going through `fmt`
/// (which cost about 2% of a tokenize run for IPv4 and 1% for IPv6).
pub(super) fn write_ip(out: &mut String, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => write_ipv4(out, v4),
        IpAddr::V6(v6) => write_ipv6(out, v6),
    }
}

fn write_ipv4(out: &mut String, a: std::net::Ipv4Addr) {
    for (k, octet) in a.octets().into_iter().enumerate() {
        if k > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// RFC 5952 text as std writes it: IPv4-mapped addresses as `::ffff:a.b.c.d`; otherwise
/// lowercase hex groups with the first longest run of two or more zero groups as `::`.
fn write_ipv6(out: &mut String, a: std::net::Ipv6Addr) {
    if let Some(v4) = a.to_ipv4_mapped() {
        out.push_str("::ffff:");
        write_ipv4(out, v4);
        return;
    }
    let groups = a.segments();
    // First longest run of zero groups.
    let (mut best, mut best_len, mut run, mut run_len) = (0, 0, 0, 0);
    for (i, &g) in groups.iter().enumerate() {
        if g == 0 {
            if run_len == 0 {
                run = i;
            }
            run_len += 1;
            if run_len > best_len {
                (best, best_len) = (run, run_len);
            }
        } else {
            run_len = 0;
        }
    }
    let hex = |out: &mut String, g: u16| {
        let mut shift = 12;
        while shift > 0 && (g >> shift) == 0 {
            shift -= 4;
        }
        loop {
            let d = ((g >> shift) & 0xf) as u8;
            out.push(char::from(if d < 10 { b'0' + d } else { b'a' + d - 10 }));
            if shift == 0 {
                break;
            }
            shift -= 4;
        }
    };
    let list = |out: &mut String, part: &[u16]| {
        for (k, &g) in part.iter().enumerate() {
            if k > 0 {
                out.push(':');
            }
            hex(out, g);
        }
    };
    if best_len > 1 {
        list(out, &groups[..best]);
        out.push_str("::");
        list(out, &groups[best + best_len..]);
    } else {
        list(out, &groups);
    }
}

/// Position of `burst_tokens` among the native schema's fields (and Parquet leaves: every
/// field is one leaf); the four other burst columns follow it.
const TOKENS_FIELD: usize = BURSTS_AT;

/// The row group being written: [`FlatColumns`] builds the chunks of the flow's own
/// columns, [`TokenColumn`] and [`BurstColumn`] those of the burst columns.
struct OpenGroup {
    flat: FlatColumns,
    tokens: TokenColumn,
    /// In [`BurstField::ALL`] order.
    bursts: Vec<BurstColumn>,
    rows: usize,
}

impl OpenGroup {
    fn write(&mut self, rows: &[NativeRow<'_>], zstd: &mut Compressor) -> Result<(), ParquetError> {
        for r in rows {
            self.flat.push(r, zstd)?;
        }
        for r in rows {
            self.tokens.push(&r.flow.tokens, zstd)?;
        }
        for column in &mut self.bursts {
            for r in rows {
                column.push(&r.flow.tokens, zstd)?;
            }
        }
        self.rows += rows.len();
        Ok(())
    }
}

struct OpenPart {
    file: SerializedFileWriter<BufWriter<File>>,
    /// Compresses every page of the part.
    zstd: Compressor,
    /// Each leaf's chunk buffers, handed from one row group to the next.
    spare: Vec<ChunkBuffers>,
    group: Option<OpenGroup>,
    row_groups: usize,
    tmp_path: PathBuf,
    final_path: PathBuf,
    rows: usize,
}

impl OpenPart {
    /// Writes rows into the open row group (starting one if none is open), closing it
    /// once it holds `group_rows`.
    fn write(
        &mut self,
        zstd: ZstdLevel,
        group_rows: usize,
        page_bytes: usize,
        rows: &[NativeRow<'_>],
    ) -> Result<(), ParquetError> {
        let mut start = 0;
        while start < rows.len() {
            if self.group.is_none() {
                let schema = self.file.schema_descr();
                let mut buffers = |leaf: usize| std::mem::take(&mut self.spare[leaf]);
                let bursts = BurstField::ALL
                    .iter()
                    .enumerate()
                    .map(|(k, &field)| {
                        let leaf = TOKENS_FIELD + 1 + k;
                        BurstColumn::new(
                            schema.column(leaf),
                            field,
                            zstd,
                            page_bytes,
                            buffers(leaf),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let tokens = TokenColumn::new(
                    schema.column(TOKENS_FIELD),
                    zstd,
                    page_bytes,
                    buffers(TOKENS_FIELD),
                )?;
                self.group = Some(OpenGroup {
                    flat: FlatColumns::new(schema, zstd, page_bytes, &mut self.spare)?,
                    tokens,
                    bursts,
                    rows: 0,
                });
            }
            let Some(group) = self.group.as_mut() else {
                break;
            };
            let take = (group_rows - group.rows.min(group_rows))
                .max(1)
                .min(rows.len() - start);
            group.write(&rows[start..start + take], &mut self.zstd)?;
            start += take;
            if group.rows >= group_rows {
                self.flush_group()?;
            }
        }
        self.rows += rows.len();
        Ok(())
    }

    /// Closes the open row group, if any, into the file.
    fn flush_group(&mut self) -> Result<(), ParquetError> {
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        // Every chunk at its leaf.
        let leaves = self.file.schema_descr().num_columns();
        let mut chunks: Vec<Option<(Bytes, ColumnCloseResult)>> = vec![None; leaves];
        let mut place = |leaf: usize, chunk| match chunks.get_mut(leaf) {
            Some(slot @ None) => {
                *slot = Some(chunk);
                Ok(())
            }
            _ => Err(ParquetError::General(format!(
                "leaf {leaf} of {leaves} written twice or not in the schema"
            ))),
        };
        let spare = &mut self.spare;
        for (leaf, chunk) in flat_leaves().zip(group.flat.close(&mut self.zstd, spare)?) {
            place(leaf, chunk)?;
        }
        place(
            TOKENS_FIELD,
            group
                .tokens
                .close(&mut self.zstd, &mut spare[TOKENS_FIELD])?,
        )?;
        for (k, column) in group.bursts.into_iter().enumerate() {
            let leaf = TOKENS_FIELD + 1 + k;
            place(leaf, column.close(&mut self.zstd, &mut spare[leaf])?)?;
        }
        let mut rg = self.file.next_row_group()?;
        for (leaf, chunk) in chunks.into_iter().enumerate() {
            let Some((bytes, close)) = chunk else {
                return Err(ParquetError::General(format!("no chunk for leaf {leaf}")));
            };
            rg.append_column(&bytes, close)?;
        }
        rg.close()?;
        self.row_groups += 1;
        Ok(())
    }
}

/// Bytes of values per page by default (the page size of parquet's Arrow writer).
const PAGE_BYTES: usize = 1 << 20;

struct Partition {
    name: &'static str,
    next_seq: u32,
    open: Option<OpenPart>,
}

/// The native Parquet sink. Call [`ParquetSink::write`] with flows as they finish and
/// [`ParquetSink::finish`] at the end; dropping it without `finish` removes unfinished parts.
pub struct ParquetSink {
    cfg: ParquetSinkConfig,
    /// The Parquet schema `schema` converts to.
    parquet_schema: SchemaDescriptor,
    /// Writer settings, with the Arrow schema embedded in the file metadata (as Arrow's
    /// own writer does, so readers get the Arrow types back exactly).
    props: Arc<WriterProperties>,
    zstd: ZstdLevel,
    partitions: BTreeMap<u8, Partition>,
    /// Parts completed so far (final names) and their rows.
    files_written: Vec<(PathBuf, u64)>,
    rows_written: u64,
}

impl ParquetSink {
    pub fn new(cfg: ParquetSinkConfig) -> Result<Self, ParquetSinkError> {
        std::fs::create_dir_all(&cfg.out_dir).map_err(|source| ParquetSinkError::Io {
            path: cfg.out_dir.clone(),
            source,
        })?;
        let level =
            ZstdLevel::try_new(cfg.zstd_level).map_err(|source| ParquetSinkError::Parquet {
                path: cfg.out_dir.clone(),
                source,
            })?;
        // The pages, their compression and the chunk statistics are this module's (see
        // [`FlatColumns`], [`TokenColumn`]); the file writer lays out row groups and the
        // footer. Chunk statistics (min, max, nulls) on the flow's own columns (times,
        // ports, counts: predicate pushdown); none on the token lists, where they help no
        // query.
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(cfg.row_group_rows.max(1)))
            .set_created_by(format!("netfm {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata((!cfg.key_value_metadata.is_empty()).then(|| {
                cfg.key_value_metadata
                    .iter()
                    .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.clone(), v.clone()))
                    .collect()
            }))
            .build();
        let schema = native_schema();
        let parquet_schema = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(&schema)
            .map_err(|source| ParquetSinkError::Parquet {
                path: cfg.out_dir.clone(),
                source,
            })?;
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        Ok(ParquetSink {
            cfg,
            parquet_schema,
            props: Arc::new(props),
            zstd: level,
            partitions: BTreeMap::new(),
            files_written: Vec::new(),
            rows_written: 0,
        })
    }

    /// Parts completed so far (final names) and their rows.
    pub fn files_written(&self) -> &[(PathBuf, u64)] {
        &self.files_written
    }

    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Writes rows (any protocols); each goes to its partition.
    pub fn write(&mut self, rows: &[NativeRow<'_>]) -> Result<(), ParquetSinkError> {
        let mut by_proto: BTreeMap<u8, Vec<NativeRow<'_>>> = BTreeMap::new();
        for r in rows {
            by_proto.entry(r.flow.protocol).or_default().push(*r);
        }
        for (proto, group) in by_proto {
            let mut start = 0;
            while start < group.len() {
                let room = self.room(proto)?.min(group.len() - start);
                let budget = self.cfg.batch_tokens.clamp(1, MAX_BATCH_TOKENS);
                let take = within_token_budget(&group[start..start + room], budget)?;
                self.append(proto, &group[start..start + take])?;
                start += take;
            }
        }
        Ok(())
    }

    /// Rows the open part of `proto` can still take (opening a part if none is open).
    fn room(&mut self, proto: u8) -> Result<usize, ParquetSinkError> {
        let part_rows = self.cfg.part_rows.max(1);
        let needs_open = self
            .partitions
            .get(&proto)
            .and_then(|p| p.open.as_ref())
            .is_none();
        if needs_open {
            self.open_part(proto)?;
        }
        let open = self
            .partitions
            .get(&proto)
            .and_then(|p| p.open.as_ref())
            .map(|o| o.rows)
            .unwrap_or(0);
        Ok(part_rows - open)
    }

    fn open_part(&mut self, proto: u8) -> Result<(), ParquetSinkError> {
        let part = self.partitions.entry(proto).or_insert(Partition {
            name: partition_name(proto),
            next_seq: self.cfg.part_seq.0,
            open: None,
        });
        let dir = self.cfg.out_dir.join(format!("proto={}", part.name));
        std::fs::create_dir_all(&dir).map_err(|source| ParquetSinkError::Io {
            path: dir.clone(),
            source,
        })?;
        let base = format!("part-{}-{:05}.parquet", self.cfg.shard_tag, part.next_seq);
        part.next_seq += self.cfg.part_seq.1.max(1);
        let final_path = dir.join(&base);
        let tmp_path = dir.join(format!(".{base}.tmp"));
        let file = File::create(&tmp_path).map_err(|source| ParquetSinkError::Io {
            path: tmp_path.clone(),
            source,
        })?;
        let file = SerializedFileWriter::new(
            BufWriter::with_capacity(1 << 20, file),
            self.parquet_schema.root_schema_ptr(),
            self.props.clone(),
        )
        .map_err(|source| ParquetSinkError::Parquet {
            path: tmp_path.clone(),
            source,
        })?;
        let zstd = compressor(self.zstd).map_err(|source| ParquetSinkError::Parquet {
            path: tmp_path.clone(),
            source,
        })?;
        let spare = (0..file.schema_descr().num_columns())
            .map(|_| ChunkBuffers::default())
            .collect();
        part.open = Some(OpenPart {
            file,
            zstd,
            spare,
            group: None,
            row_groups: 0,
            tmp_path,
            final_path,
            rows: 0,
        });
        Ok(())
    }

    fn append(&mut self, proto: u8, rows: &[NativeRow<'_>]) -> Result<(), ParquetSinkError> {
        let part_rows = self.cfg.part_rows.max(1);
        let group_rows = self.cfg.row_group_rows.max(1);
        let Some(part) = self.partitions.get_mut(&proto) else {
            return Ok(());
        };
        let Some(open) = part.open.as_mut() else {
            return Ok(());
        };
        open.write(self.zstd, group_rows, self.cfg.page_bytes, rows)
            .map_err(|source| ParquetSinkError::Parquet {
                path: open.tmp_path.clone(),
                source,
            })?;
        self.rows_written += rows.len() as u64;
        if open.rows >= part_rows {
            let open = part.open.take().expect("checked above");
            let done = close_part(open)?;
            self.files_written.push(done);
        }
        Ok(())
    }

    /// Closes every open part (footer, fsync-free rename) and returns all parts written.
    pub fn finish(self) -> Result<Vec<PathBuf>, ParquetSinkError> {
        Ok(self
            .finish_with_rows()?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// [`Self::finish`], with each part's rows.
    pub fn finish_with_rows(mut self) -> Result<Vec<(PathBuf, u64)>, ParquetSinkError> {
        self.close_open_parts()?;
        Ok(std::mem::take(&mut self.files_written))
    }

    /// Closes every open part under its final name; later rows open new parts. A stream
    /// calls this at its `--part-seconds` bound, so its data becomes readable as it goes.
    pub fn close_open_parts(&mut self) -> Result<(), ParquetSinkError> {
        let opens: Vec<OpenPart> = self
            .partitions
            .values_mut()
            .filter_map(|p| p.open.take())
            .collect();
        for open in opens {
            let done = close_part(open)?;
            self.files_written.push(done);
        }
        Ok(())
    }
}

fn close_part(open: OpenPart) -> Result<(PathBuf, u64), ParquetSinkError> {
    let mut open = open;
    let rows = open.rows as u64;
    let parquet_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| ParquetSinkError::Parquet { path, source }
    };
    open.flush_group().map_err(parquet_err(&open.tmp_path))?;
    let OpenPart {
        file,
        tmp_path,
        final_path,
        ..
    } = open;
    let inner = file.into_inner().map_err(parquet_err(&tmp_path))?;
    inner.into_inner().map_err(|e| ParquetSinkError::Io {
        path: tmp_path.clone(),
        source: e.into_error(),
    })?;
    std::fs::rename(&tmp_path, &final_path).map_err(|source| ParquetSinkError::Io {
        path: final_path.clone(),
        source,
    })?;
    Ok((final_path, rows))
}

impl Drop for ParquetSink {
    fn drop(&mut self) {
        // Unfinished parts are incomplete: remove them so that no reader ever sees them.
        for p in self.partitions.values_mut() {
            if let Some(open) = p.open.take() {
                let _ = std::fs::remove_file(&open.tmp_path);
            }
        }
    }
}

/// How many of `rows` (at least one) fit one batch of at most `budget` tokens (which bounds
/// the batch's bursts, in Arrow lists with 32-bit offsets). A single flow over the budget
/// is an error.
fn within_token_budget(rows: &[NativeRow<'_>], budget: usize) -> Result<usize, ParquetSinkError> {
    let mut tokens = 0usize;
    for (k, r) in rows.iter().enumerate() {
        let n = r.flow.tokens.tokens.len();
        if n > budget {
            return Err(ParquetSinkError::FlowTooLarge {
                tokens: n,
                max: budget,
            });
        }
        tokens += n;
        if tokens > budget {
            return Ok(k);
        }
    }
    Ok(rows.len())
}

/// Deterministic 64-bit flow id from the source name and the flow's index in that source.
pub fn flow_id(source: &str, index: u64) -> u64 {
    flow_id_of(source_hash(source), index)
}

/// The part of [`flow_id`] that depends on the source alone (FNV-1a of its bytes: a chain
/// of multiplies per byte, so computed once per batch of flows, not once per flow).
pub fn source_hash(source: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in source.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// [`flow_id`] from the source's [`source_hash`].
pub fn flow_id_of(source_hash: u64, index: u64) -> u64 {
    mix64(source_hash ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

#[cfg(test)]
mod ip_text_tests {
    use super::write_ip;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv4_text_equals_display_for_every_octet_value() {
        let mut s = String::new();
        for o in 0..=255u8 {
            for a in [
                Ipv4Addr::new(o, 0, 9, 10),
                Ipv4Addr::new(99, o, 100, 255),
                Ipv4Addr::new(1, 2, o, o),
            ] {
                s.clear();
                write_ip(&mut s, IpAddr::V4(a));
                assert_eq!(s, a.to_string());
            }
        }
        s.clear();
        let v6: IpAddr = "2001:db8::ffff:1.2.3.4".parse().expect("v6");
        write_ip(&mut s, v6);
        assert_eq!(s, v6.to_string());
    }

    /// Every pattern of zero groups (all 256), each with varied non-zero group values, and
    /// the special forms: the text must equal std's `Display` byte for byte.
    #[test]
    fn ipv6_text_equals_display() {
        let mut s = String::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut check = |groups: [u16; 8]| {
            let a = Ipv6Addr::from(groups);
            s.clear();
            write_ip(&mut s, IpAddr::V6(a));
            assert_eq!(s, a.to_string(), "{groups:x?}");
        };
        for zeros in 0..=255u32 {
            for _ in 0..64 {
                let mut groups = [0u16; 8];
                for (i, g) in groups.iter_mut().enumerate() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if zeros & (1 << i) == 0 {
                        // 1 to 4 hex digits.
                        *g = ((x as u16) >> ((x >> 20) % 4 * 4)).max(1);
                    }
                }
                check(groups);
            }
        }
        for special in [
            [0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304], // IPv4-mapped
            [0, 0, 0, 0, 0, 0, 0x0102, 0x0304],      // IPv4-compatible (deprecated)
            [0, 0, 0, 0, 0, 0, 0, 1],
            [0; 8],
            [0xffff; 8],
            [0, 0, 0, 0, 0xffff, 0, 0, 0],
            [0x64, 0xff9b, 0, 0, 0, 0, 0x0a00, 1], // NAT64
        ] {
            check(special);
        }
    }
}

/// Flows and rows for the sink's tests.
#[cfg(test)]
mod test_rows {
    use super::*;
    use crate::flow::EndReason;
    use netfm_tokenizer::TokenizedFlow;

    /// A one-packet UDP flow from 10.0.0.1:`src_port` to `dst`:53 with these tokens.
    pub fn record(dst: &str, src_port: u16, tokens: TokenizedFlow) -> FlowRecord {
        FlowRecord {
            src: "10.0.0.1".parse().expect("ip"),
            dst: dst.parse().expect("ip"),
            src_port,
            dst_port: 53,
            protocol: 17,
            first_ts_ns: 0,
            last_ts_ns: 1,
            icmp: None,
            tunnel: None,
            fwd_packets: 1,
            bwd_packets: 0,
            fwd_bytes: 40,
            bwd_bytes: 0,
            end_reason: EndReason::Idle,
            tokens,
        }
    }

    /// One row per flow, flow ids 0, 1, ... from source `s`.
    pub fn rows(flows: &[FlowRecord]) -> Vec<NativeRow<'_>> {
        flows
            .iter()
            .enumerate()
            .map(|(k, flow)| NativeRow {
                flow_id: k as u64,
                source: "s",
                label: None,
                flow,
            })
            .collect()
    }
}

#[cfg(test)]
mod token_budget_tests {
    use super::test_rows::rows;
    use super::*;
    use arrow::array::{Array, AsArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn record(n: u16, tokens: usize) -> FlowRecord {
        super::test_rows::record(
            "10.0.0.2",
            n,
            crate::dataset::one_burst_flow(n, tokens, true),
        )
    }

    /// Record batches are cut by tokens as well as rows (Arrow's 32-bit list offsets): every
    /// row arrives, in order; a single flow over the budget is an error, not a panic.
    #[test]
    fn batches_are_bounded_by_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ParquetSinkConfig::new(dir.path());
        cfg.batch_tokens = 30;
        let flows: Vec<FlowRecord> = (0..7).map(|n| record(n, 12)).collect();
        let mut sink = ParquetSink::new(cfg).expect("sink");
        sink.write(&rows(&flows)).expect("write");
        let big = [record(99, 31)];
        let err = sink.write(&rows(&big)).expect_err("too large");
        assert!(err.to_string().contains("31 tokens"), "{err}");
        let parts = sink.finish().expect("finish");
        assert_eq!(parts.len(), 1);
        let file = File::open(&parts[0]).expect("open");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("reader")
            .build()
            .expect("build");
        let mut ports = Vec::new();
        for batch in reader {
            let batch = batch.expect("batch");
            let col = batch
                .column_by_name("src_port")
                .expect("src_port")
                .as_primitive::<arrow::datatypes::UInt16Type>();
            let tokens = batch
                .column_by_name("burst_tokens")
                .expect("tokens")
                .as_list::<i32>();
            for i in 0..batch.num_rows() {
                ports.push(col.value(i));
                assert_eq!(tokens.value(i).as_list::<i32>().value(0).len(), 12);
            }
        }
        assert_eq!(ports, (0..7).collect::<Vec<u16>>());
    }
}

#[cfg(test)]
mod token_column_tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{UInt16Type, UInt32Type, UInt64Type};
    use netfm_tokenizer::{Burst, TokenizedFlow};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// A flow with these bursts; their metadata varies with the flow's `seed` and the
    /// burst's position, down to the largest unsigned values.
    fn flow(seed: u32, bursts: &[&[u16]]) -> FlowRecord {
        let mut tokens = TokenizedFlow {
            protocol: 17,
            ..TokenizedFlow::default()
        };
        for (k, t) in bursts.iter().enumerate() {
            let x = seed
                .wrapping_mul(2_654_435_761)
                .wrapping_add(k as u32 * 40_503);
            let burst = Burst {
                token_len: 0,
                forward: !(x >> 7).is_multiple_of(3),
                bytes: if k == 1 { u32::MAX } else { x % 100_000 },
                count: x % 7,
                iat_us: if k == 2 { u64::MAX } else { u64::from(x) << 3 },
                start_ns: k as u64,
            };
            tokens.push_burst(burst, t);
        }
        super::test_rows::record("2001:db8::2", bursts.len() as u16, tokens)
    }

    /// One flow's five burst columns.
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct BurstRow {
        burst_tokens: Vec<Vec<u16>>,
        directions: Vec<bool>,
        bytes: Vec<u32>,
        iats: Vec<u64>,
        counts: Vec<u32>,
    }

    fn expected(f: &FlowRecord) -> BurstRow {
        let t = &f.tokens;
        BurstRow {
            burst_tokens: t.bursts_with_tokens().map(|(_, t)| t.to_vec()).collect(),
            directions: t.bursts.iter().map(|b| b.forward).collect(),
            bytes: t.bursts.iter().map(|b| b.bytes).collect(),
            iats: t.bursts.iter().map(|b| b.iat_us).collect(),
            counts: t.bursts.iter().map(|b| b.count).collect(),
        }
    }

    /// The burst columns of one part, read with parquet-rs.
    fn read_back(path: &std::path::Path) -> Vec<BurstRow> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("open"))
            .expect("reader");
        let mut rows = Vec::new();
        for batch in reader.build().expect("build") {
            let batch = batch.expect("batch");
            let list = |name: &str| {
                batch
                    .column_by_name(name)
                    .expect(name)
                    .as_list::<i32>()
                    .clone()
            };
            let (tokens, dirs, bytes, iats, counts) = (
                list("burst_tokens"),
                list("directions"),
                list("bytes"),
                list("iats"),
                list("counts"),
            );
            for i in 0..batch.num_rows() {
                for l in [&tokens, &dirs, &bytes, &iats, &counts] {
                    assert!(l.is_valid(i));
                }
                let bursts = tokens.value(i);
                let bursts = bursts.as_list::<i32>();
                rows.push(BurstRow {
                    burst_tokens: (0..bursts.len())
                        .map(|b| {
                            bursts
                                .value(b)
                                .as_primitive::<UInt16Type>()
                                .values()
                                .to_vec()
                        })
                        .collect(),
                    directions: dirs
                        .value(i)
                        .as_boolean()
                        .iter()
                        .map(|b| b.expect("set"))
                        .collect(),
                    bytes: bytes
                        .value(i)
                        .as_primitive::<UInt32Type>()
                        .values()
                        .to_vec(),
                    iats: iats.value(i).as_primitive::<UInt64Type>().values().to_vec(),
                    counts: counts
                        .value(i)
                        .as_primitive::<UInt32Type>()
                        .values()
                        .to_vec(),
                });
            }
        }
        rows
    }

    /// The hand-encoded burst columns read back, with parquet-rs and with pyarrow, as
    /// exactly the flows' bursts: flows without bursts, bursts without tokens, the largest
    /// values, rows across row groups (3 rows each) and across pages (a flow set larger than
    /// one page; and pages of a few bytes, so that bit-packed booleans end mid-byte).
    #[test]
    fn burst_pages_read_back_as_written() {
        let big: Vec<Vec<u16>> = (0..300u32)
            .map(|r| {
                (0..1000u32)
                    .map(|k| ((r * 7919 + k * 104_729) % 65_536) as u16)
                    .collect()
            })
            .collect();
        let many: Vec<&[u16]> = (0..13).map(|k| &big[k][..k]).collect();
        let mut flows = vec![
            flow(1, &[]),
            flow(2, &[&[]]),
            flow(3, &[&[1, 2, 3], &[], &[65535, 0]]),
            flow(4, &[&[9; 12]]),
            flow(5, &[&[], &[]]),
            flow(6, &many),
            flow(7, &[&[4]]),
        ];
        flows.extend(
            big.iter()
                .enumerate()
                .map(|(k, t)| flow(8 + k as u32, &[t, &t[..10], &[], &t[..k % 5]][..1 + k % 4])),
        );
        flows.push(flow(999, &[]));
        let want: Vec<BurstRow> = flows.iter().map(expected).collect();

        for page_bytes in [PAGE_BYTES, 37] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cfg = ParquetSinkConfig::new(dir.path());
            cfg.row_group_rows = 3;
            cfg.page_bytes = page_bytes;
            let mut sink = ParquetSink::new(cfg).expect("sink");
            let rows = super::test_rows::rows(&flows);
            // In two writes, so that a row group spans writes.
            sink.write(&rows[..4]).expect("write");
            sink.write(&rows[4..]).expect("write");
            let parts = sink.finish().expect("finish");
            assert_eq!(parts.len(), 1);
            let meta =
                ParquetRecordBatchReaderBuilder::try_new(File::open(&parts[0]).expect("open"))
                    .expect("reader")
                    .metadata()
                    .clone();
            assert_eq!(meta.num_row_groups(), flows.len().div_ceil(3));
            assert_eq!(read_back(&parts[0]), want, "page_bytes {page_bytes}");

            // pyarrow, a real consumer, reads the same lists, with the same types.
            let stdout = crate::dataset::python(
                "import sys, json, pyarrow.parquet as pq\n\
                 t = pq.read_table(sys.argv[1])\n\
                 names = ['burst_tokens', 'directions', 'bytes', 'iats', 'counts']\n\
                 print(json.dumps([str(t.schema.field(n).type) for n in names]))\n\
                 print(json.dumps(t.select(names).to_pylist()))",
                &[parts[0].as_os_str()],
            );
            let mut lines = stdout.lines();
            let types: Vec<String> =
                serde_json::from_str(lines.next().expect("types")).expect("json");
            assert_eq!(
                types,
                [
                    "list<item: list<item: uint16>>",
                    "list<item: bool>",
                    "list<item: uint32>",
                    "list<item: uint64>",
                    "list<item: uint32>"
                ]
            );
            let py: Vec<BurstRow> =
                serde_json::from_str(lines.next().expect("rows")).expect("json");
            assert_eq!(py, want, "page_bytes {page_bytes}");
        }
    }

    /// Pages whose levels outgrow the room kept in front of their values (flows alternating
    /// between no burst and one burst, so every flow starts new level runs), in several
    /// row groups that hand their buffers on: every row reads back as written, with
    /// parquet-rs and with pyarrow, before and after the room grows.
    #[test]
    fn pages_with_levels_larger_than_their_room_read_back() {
        let flows: Vec<FlowRecord> = (0..30_000u32)
            .map(|k| {
                if k % 2 == 0 {
                    flow(k, &[])
                } else {
                    let bursts: [&[u16]; 2] = [&[k as u16, 7], &[]];
                    flow(k, &bursts[..1 + (k as usize / 2) % 2])
                }
            })
            .collect();
        let want: Vec<BurstRow> = flows.iter().map(expected).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ParquetSinkConfig::new(dir.path());
        cfg.row_group_rows = 10_000;
        let mut sink = ParquetSink::new(cfg).expect("sink");
        let rows = super::test_rows::rows(&flows);
        for chunk in rows.chunks(4096) {
            sink.write(chunk).expect("write");
        }
        let parts = sink.finish().expect("finish");
        assert_eq!(parts.len(), 1);
        assert_eq!(read_back(&parts[0]), want);
        let out = crate::dataset::python(
            "import sys, pyarrow.parquet as pq\n\
             t = pq.read_table(sys.argv[1])\n\
             print(t.num_rows, sum(len(x) for x in t.column('bytes').to_pylist()), \
             sum(sum(len(b) for b in x) for x in t.column('burst_tokens').to_pylist()))",
            &[parts[0].as_os_str()],
        );
        let bursts: usize = want.iter().map(|r| r.bytes.len()).sum();
        let tokens: usize = want
            .iter()
            .map(|r| r.burst_tokens.iter().map(Vec::len).sum::<usize>())
            .sum();
        assert_eq!(out.trim(), format!("{} {bursts} {tokens}", flows.len()));
    }

    #[test]
    fn tokens_field_is_where_the_writer_expects_it() {
        assert_eq!(native_schema().field(TOKENS_FIELD).name(), "burst_tokens");
    }
}

#[cfg(test)]
mod flat_column_tests {
    use super::*;
    use crate::dataset::burst_columns::BurstColumnsBuilder;
    use crate::flow::EndReason;
    use arrow::array::{
        ArrayRef, RecordBatch, StringBuilder, UInt16Builder, UInt64Builder, UInt8Builder,
    };
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::EnabledStatistics;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// The flow's own columns as Arrow arrays, in schema order: the oracle's input, built
    /// through Arrow's builders from each column's value as the schema's descriptions
    /// define it.
    fn flat_arrays(rows: &[NativeRow<'_>]) -> Vec<ArrayRef> {
        use crate::dataset::flat_columns::Ty;
        use arrow::array::{TimestampMicrosecondBuilder, UInt32Builder};
        enum V {
            U(Option<u64>),
            S(Option<String>),
        }
        let text = |a: IpAddr| {
            let mut s = String::new();
            write_ip(&mut s, a);
            s
        };
        let value = |r: &NativeRow<'_>, name: &str| -> V {
            let f = r.flow;
            let icmp = f.icmp;
            let port = |p: u16| V::U(icmp.is_none().then_some(u64::from(p)));
            let quoted = icmp.and_then(|i| i.quoted);
            match name {
                "flow_id" => V::U(Some(r.flow_id)),
                "source" => V::S(Some(r.source.to_string())),
                "src_ip" => V::S(Some(text(f.src))),
                "dst_ip" => V::S(Some(text(f.dst))),
                "src_port" => port(f.src_port),
                "dst_port" => port(f.dst_port),
                "protocol" => V::U(Some(u64::from(f.protocol))),
                "ip_version" => V::U(Some(if f.src.is_ipv4() { 4 } else { 6 })),
                "icmp_type" => V::U(icmp.map(|i| u64::from(i.icmp_type))),
                "icmp_code" => V::U(icmp.map(|i| u64::from(i.code))),
                "icmp_id" => V::U(icmp.and_then(|i| i.identifier).map(u64::from)),
                "icmp_quoted_protocol" => V::U(quoted.map(|q| u64::from(q.0))),
                "icmp_quoted_src_port" => V::U(quoted.map(|q| u64::from(q.1))),
                "icmp_quoted_dst_port" => V::U(quoted.map(|q| u64::from(q.2))),
                "tunnel" => V::S(f.tunnel.map(|t| t.kind.to_string())),
                "outer_src_ip" => V::S(f.tunnel.map(|t| text(t.outer_src))),
                "outer_dst_ip" => V::S(f.tunnel.map(|t| text(t.outer_dst))),
                "tunnel_id" => V::U(f.tunnel.and_then(|t| t.id).map(u64::from)),
                "start_time" => V::U(Some(f.first_ts_ns / 1000)),
                "end_time" => V::U(Some(f.last_ts_ns / 1000)),
                "flow_duration" => V::U(Some(f.tokens.flow_duration_us)),
                "fwd_packets" => V::U(Some(f.fwd_packets)),
                "bwd_packets" => V::U(Some(f.bwd_packets)),
                "fwd_bytes" => V::U(Some(f.fwd_bytes)),
                "bwd_bytes" => V::U(Some(f.bwd_bytes)),
                "end_reason" => V::S(Some(f.end_reason.name().to_string())),
                "labels" => V::S(r.label.map(str::to_string)),
                other => panic!("no oracle for column {other}"),
            }
        };
        let uints = |name: &str| -> Vec<Option<u64>> {
            rows.iter()
                .map(|r| match value(r, name) {
                    V::U(v) => v,
                    V::S(_) => panic!("{name} is a string"),
                })
                .collect()
        };
        COLUMNS
            .iter()
            .map(|c| -> ArrayRef {
                match c.ty {
                    Ty::U8 => {
                        let mut b = UInt8Builder::new();
                        uints(c.name)
                            .into_iter()
                            .for_each(|v| b.append_option(v.map(|v| v as u8)));
                        Arc::new(b.finish())
                    }
                    Ty::U16 => {
                        let mut b = UInt16Builder::new();
                        uints(c.name)
                            .into_iter()
                            .for_each(|v| b.append_option(v.map(|v| v as u16)));
                        Arc::new(b.finish())
                    }
                    Ty::U32 => {
                        let mut b = UInt32Builder::new();
                        uints(c.name)
                            .into_iter()
                            .for_each(|v| b.append_option(v.map(|v| v as u32)));
                        Arc::new(b.finish())
                    }
                    Ty::U64 => {
                        let mut b = UInt64Builder::new();
                        uints(c.name).into_iter().for_each(|v| b.append_option(v));
                        Arc::new(b.finish())
                    }
                    Ty::Timestamp => {
                        let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
                        uints(c.name)
                            .into_iter()
                            .for_each(|v| b.append_option(v.map(|v| v as i64)));
                        Arc::new(b.finish())
                    }
                    Ty::Str => {
                        let mut b = StringBuilder::new();
                        for r in rows {
                            match value(r, c.name) {
                                V::S(v) => b.append_option(v),
                                V::U(_) => panic!("{} is a number", c.name),
                            }
                        }
                        Arc::new(b.finish())
                    }
                }
            })
            .collect()
    }
    /// Flows whose flat fields cover each column's range: IPv4, IPv6 and IPv4-mapped
    /// addresses, ports and counters at 0 and at their largest values (above `i64::MAX`,
    /// where unsigned and signed order differ), every end reason.
    fn flows() -> Vec<FlowRecord> {
        let reasons = [
            EndReason::Idle,
            EndReason::Active,
            EndReason::TcpClose,
            EndReason::Evicted,
            EndReason::EndOfCapture,
            EndReason::Interrupted,
        ];
        let addrs = [
            "10.0.0.1",
            "2001:db8::2",
            "::ffff:192.0.2.7",
            "255.255.255.255",
            "fe80::1:2:3:4",
            "0.0.0.0",
        ];
        (0..23u64)
            .map(|k| {
                let x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let big = |v: u64| if k % 7 == 3 { u64::MAX - v } else { v };
                let mut tokens =
                    crate::dataset::one_burst_flow(k as u16, (k % 4) as usize, k % 2 == 0);
                tokens.flow_duration_us = big(x >> 20);
                let mut f =
                    super::test_rows::record(addrs[(k as usize + 1) % addrs.len()], 0, tokens);
                f.src = addrs[k as usize % addrs.len()].parse().expect("ip");
                f.src_port = if k % 5 == 0 {
                    u16::MAX
                } else {
                    (x >> 48) as u16
                };
                f.dst_port = (k * 1000) as u16;
                f.protocol = [6, 17, 1, 58][k as usize % 4];
                f.first_ts_ns = 1_700_000_000_000_000_000 + (x >> 8);
                f.last_ts_ns = f.first_ts_ns + k * 1_000;
                f.fwd_packets = big(k);
                f.bwd_packets = big(x >> 40);
                f.fwd_bytes = big(k * 1500);
                f.bwd_bytes = x >> 1;
                f.end_reason = reasons[k as usize % reasons.len()];
                if f.protocol == 1 || f.protocol == 58 {
                    f.icmp = Some(crate::flow::IcmpFlowInfo {
                        icmp_type: (x >> 3) as u8,
                        code: (k % 16) as u8,
                        identifier: (k % 3 == 0).then_some((x >> 24) as u16),
                        quoted: (k % 3 == 1).then_some((6, (x >> 32) as u16, u16::MAX)),
                    });
                }
                if k % 3 == 0 {
                    f.tunnel = Some(crate::flow::FlowTunnel {
                        kind: ["vxlan", "gre", "gtpu"][k as usize % 3],
                        outer_src: addrs[(k as usize + 2) % addrs.len()].parse().expect("ip"),
                        outer_dst: "192.0.2.254".parse().expect("ip"),
                        id: (k % 2 == 0).then_some(if k % 4 == 0 { u32::MAX } else { k as u32 }),
                    });
                }
                f
            })
            .collect()
    }

    /// The flat columns (and statistics) of the sink's parts equal those parquet's own Arrow
    /// writer writes for the same rows, with chunk statistics on: values read back with
    /// parquet-rs and with pyarrow, min and max (unsigned order where the type is unsigned,
    /// long strings truncated to bounds, multi-byte characters kept whole), null counts of
    /// `labels`, the byte size of string columns; across row groups and across pages.
    #[test]
    fn flat_columns_equal_the_arrow_writers() {
        let flows = flows();
        let long = format!(
            "/captures/{}/très-long-répertoire/{}.pcap",
            "é".repeat(20),
            "x".repeat(30)
        );
        let labels: Vec<Option<String>> = (0..flows.len())
            .map(|k| match k % 4 {
                0 => None,
                1 => Some("benign".to_string()),
                2 => Some(format!("{}ü{}", "m".repeat(62), "z".repeat(9))),
                _ => Some("ddos".to_string()),
            })
            .collect();
        let rows: Vec<NativeRow<'_>> = flows
            .iter()
            .enumerate()
            .map(|(k, flow)| NativeRow {
                flow_id: if k % 3 == 0 {
                    u64::MAX - k as u64
                } else {
                    k as u64
                },
                source: if k < 11 { "a.pcap" } else { long.as_str() },
                label: labels[k].as_deref(),
                flow,
            })
            .collect();
        let group_rows = 4;
        for page_bytes in [PAGE_BYTES, 37] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cfg = ParquetSinkConfig::new(dir.path().join("sink"));
            cfg.row_group_rows = group_rows;
            cfg.page_bytes = page_bytes;
            let mut sink = ParquetSink::new(cfg).expect("sink");
            // One protocol, so that one part gets every row.
            let one: Vec<NativeRow<'_>> = rows
                .iter()
                .filter(|r| r.flow.protocol == 6)
                .copied()
                .collect();
            sink.write(&one[..2]).expect("write");
            sink.write(&one[2..]).expect("write");
            let parts = sink.finish().expect("finish");
            assert_eq!(parts.len(), 1);

            // The oracle: the same rows through parquet's Arrow writer.
            let oracle = dir.path().join("oracle.parquet");
            let mut columns = flat_arrays(&one);
            let labels = columns.pop().expect("labels");
            let mut bursts = BurstColumnsBuilder::with_capacity(one.len());
            for r in &one {
                bursts.append(&r.flow.tokens);
            }
            columns.extend(bursts.finish());
            columns.push(labels);
            let batch = RecordBatch::try_new(native_schema(), columns).expect("batch");
            let props = WriterProperties::builder()
                .set_dictionary_enabled(false)
                .set_statistics_enabled(EnabledStatistics::Chunk)
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_max_row_group_row_count(Some(group_rows))
                .build();
            let mut w = ArrowWriter::try_new(
                File::create(&oracle).expect("create"),
                native_schema(),
                Some(props),
            )
            .expect("writer");
            w.write(&batch).expect("write");
            w.close().expect("close");

            let read = |p: &std::path::Path| -> Vec<RecordBatch> {
                ParquetRecordBatchReaderBuilder::try_new(File::open(p).expect("open"))
                    .expect("reader")
                    .build()
                    .expect("build")
                    .collect::<Result<_, _>>()
                    .expect("batches")
            };
            let (ours, theirs) = (read(&parts[0]), read(&oracle));
            let concat = |b: &[RecordBatch]| {
                arrow::compute::concat_batches(&native_schema(), b).expect("concat")
            };
            assert_eq!(concat(&ours), concat(&theirs), "page_bytes {page_bytes}");

            let meta = |p: &std::path::Path| {
                SerializedFileReader::new(File::open(p).expect("open"))
                    .expect("reader")
                    .metadata()
                    .clone()
            };
            let (ours, theirs) = (meta(&parts[0]), meta(&oracle));
            assert_eq!(ours.num_row_groups(), one.len().div_ceil(group_rows));
            assert_eq!(ours.num_row_groups(), theirs.num_row_groups());
            let mut truncated = 0;
            for g in 0..ours.num_row_groups() {
                for leaf in flat_leaves() {
                    let (a, b) = (
                        ours.row_group(g).column(leaf),
                        theirs.row_group(g).column(leaf),
                    );
                    let name = a.column_path().string();
                    assert_eq!(a.statistics(), b.statistics(), "{name}, row group {g}");
                    assert!(a.statistics().is_some(), "{name}");
                    assert_eq!(
                        a.unencoded_byte_array_data_bytes(),
                        b.unencoded_byte_array_data_bytes(),
                        "{name}"
                    );
                    assert_eq!(a.num_values(), b.num_values(), "{name}");
                    if a.statistics()
                        .is_some_and(|s| !s.max_is_exact() || !s.min_is_exact())
                    {
                        truncated += 1;
                    }
                }
            }
            assert!(truncated >= 2, "the long strings' bounds were truncated");

            // pyarrow, a real consumer, reads the same tables and statistics from both.
            let leaves = flat_leaves()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let out = crate::dataset::python(
                "import sys, pyarrow.parquet as pq\n\
                 a, b = (pq.ParquetFile(p) for p in sys.argv[1:3])\n\
                 assert a.read().equals(b.read())\n\
                 for g in range(a.metadata.num_row_groups):\n\
                 \x20   for c in [int(x) for x in sys.argv[3].split(',')]:\n\
                 \x20       sa = a.metadata.row_group(g).column(c).statistics\n\
                 \x20       sb = b.metadata.row_group(g).column(c).statistics\n\
                 \x20       assert sa.equals(sb), (g, c, sa, sb)\n\
                 print('ok')",
                &[
                    parts[0].as_os_str(),
                    oracle.as_os_str(),
                    std::ffi::OsStr::new(&leaves),
                ],
            );
            assert_eq!(out.trim(), "ok");
        }
    }
}
