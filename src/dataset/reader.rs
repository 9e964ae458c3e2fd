//! Reads tokenized flow datasets back, one [`FlowExample`] at a time, for training and
//! inference: netfm's native Parquet datasets (a `proto=<...>/part-*.parquet` tree or one
//! file) and netFound's Arrow IPC streams (ours, or the files netFound itself wrote).
//!
//! Columns are found by name, so extra columns are ignored and both formats share one row
//! decoder: `flow_duration`, `protocol` and the five burst columns are required, `labels` is
//! optional. Columns of another integer width, large lists, dictionary strings and the like
//! are cast to netFound's types first; a value that does not fit becomes null, and a row
//! with a null where a value belongs, or with per-burst lists whose lengths disagree with
//! its bursts, is malformed: it is skipped and counted ([`DatasetReader::skipped`]), and the
//! first one of each file is logged. A file that is not a dataset, or lacks a required
//! column, is an error naming the file (and the column).
//!
//! The format is told by magic bytes, never by extension. Memory is bounded by one record
//! batch: [`BATCH_ROWS`] rows for Parquet, the writer's batches for Arrow IPC (netFound
//! writes 1000 rows per batch). Files are read in sorted path order, so two runs over the
//! same dataset see the same flows in the same order.
//!
//! This module never writes or deletes anything.

use anyhow::{anyhow, bail, Context};
use arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch};
use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt16Type, UInt32Type, UInt64Type};
use arrow::ipc::reader::{FileReader, StreamReader};
use netfm_tokenizer::{Burst, TokenizedFlow};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per Parquet record batch.
pub const BATCH_ROWS: usize = 1024;

/// One flow as a model sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowExample {
    /// Protocol, bursts (`start_ns` = 0: datasets do not store it), duration; `packets` is
    /// the sum of the burst counts and `inexact_late_packets` is 0.
    pub flow: TokenizedFlow,
    /// The `labels` column when present and non-null.
    pub label: Option<String>,
    /// Who the flow is, from the native dataset's columns where the file has them (netFound's
    /// schema has none of them).
    pub id: FlowIdentity,
    /// The dataset file it was read from: an index into [`DatasetReader::files`].
    pub file: usize,
}

/// A flow's identifying columns; each is `None` where the file lacks the column or the
/// row holds a null.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowIdentity {
    pub flow_id: Option<u64>,
    /// The capture file the flow came from.
    pub source: Option<String>,
    pub src_ip: Option<String>,
    pub dst_ip: Option<String>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// Microseconds since the Unix epoch.
    pub start_time_us: Option<i64>,
}

/// The on-disk formats, as told by their magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Parquet,
    /// Arrow IPC stream (what netFound and `--format netfound` write).
    IpcStream,
    /// Arrow IPC file (`ARROW1` ... footer).
    IpcFile,
}

fn sniff(path: &Path) -> anyhow::Result<Option<Format>> {
    let mut head = [0u8; 8];
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    let head = &head[..n];
    Ok(if head.starts_with(b"PAR1") {
        Some(Format::Parquet)
    } else if head.starts_with(b"ARROW1") {
        Some(Format::IpcFile)
    } else if head.starts_with(&[0xff; 4]) {
        Some(Format::IpcStream)
    } else {
        None
    })
}

/// Column names, as netFound's schema spells them.
const FLOW_DURATION: &str = "flow_duration";
const PROTOCOL: &str = "protocol";
const BURST_TOKENS: &str = "burst_tokens";
const DIRECTIONS: &str = "directions";
const BYTES: &str = "bytes";
const IATS: &str = "iats";
const COUNTS: &str = "counts";
const LABELS: &str = "labels";
/// Optional identity columns of the native schema.
const IDENTITY: [(&str, DataType); 7] = [
    ("flow_id", DataType::UInt64),
    ("source", DataType::Utf8),
    ("src_ip", DataType::Utf8),
    ("dst_ip", DataType::Utf8),
    ("src_port", DataType::UInt16),
    ("dst_port", DataType::UInt16),
    ("start_time", DataType::Int64),
];

fn list_of(dt: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", dt, true)))
}

/// The columns the decoder reads, with their decoded types; all but `labels` are required.
fn wanted_columns() -> [(&'static str, DataType); 8] {
    [
        (FLOW_DURATION, DataType::UInt64),
        (PROTOCOL, DataType::UInt16),
        (BURST_TOKENS, list_of(list_of(DataType::UInt16))),
        (DIRECTIONS, list_of(DataType::Boolean)),
        (BYTES, list_of(DataType::UInt32)),
        (IATS, list_of(DataType::UInt64)),
        (COUNTS, list_of(DataType::UInt32)),
        (LABELS, DataType::Utf8),
    ]
}

/// Same physical layout, ignoring list item names and nullability (pyarrow names Parquet
/// list items `element`, Arrow ones `item`).
fn same_layout(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::List(x), DataType::List(y)) => same_layout(x.data_type(), y.data_type()),
        _ => a == b,
    }
}

/// Checks that `schema` has every required column in a castable type; returns the indices
/// of the wanted columns that are present.
fn check_schema(path: &Path, schema: &Schema) -> anyhow::Result<Vec<usize>> {
    let mut indices = Vec::new();
    for (name, want) in wanted_columns() {
        match schema.index_of(name) {
            Ok(i) => {
                let have = schema.field(i).data_type();
                if !same_layout(have, &want) && !can_cast_types(have, &want) {
                    bail!(
                        "{}: column `{name}` has type {have}, which cannot be read as {want}",
                        path.display()
                    );
                }
                indices.push(i);
            }
            Err(_) if name == LABELS => {}
            Err(_) => bail!(
                "{}: required column `{name}` is missing (columns: {})",
                path.display(),
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    for (name, want) in IDENTITY {
        if let Ok(i) = schema.index_of(name) {
            if can_cast_types(schema.field(i).data_type(), &want) {
                indices.push(i);
            }
        }
    }
    indices.sort_unstable();
    Ok(indices)
}

/// Record batches of one open file.
enum Batches {
    Parquet(ParquetRecordBatchReader),
    IpcStream(StreamReader<BufReader<File>>),
    IpcFile(FileReader<BufReader<File>>),
}

impl Batches {
    fn open(path: &Path, format: Format) -> anyhow::Result<Batches> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(match format {
            Format::Parquet => {
                let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                    .with_context(|| format!("{}: reading Parquet footer", path.display()))?;
                let indices = check_schema(path, builder.schema())?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
                Batches::Parquet(
                    builder
                        .with_projection(mask)
                        .with_batch_size(BATCH_ROWS)
                        .build()
                        .with_context(|| format!("{}: opening Parquet reader", path.display()))?,
                )
            }
            Format::IpcStream => {
                let r = StreamReader::try_new_buffered(file, None)
                    .with_context(|| format!("{}: reading Arrow IPC stream", path.display()))?;
                check_schema(path, &r.schema())?;
                Batches::IpcStream(r)
            }
            Format::IpcFile => {
                let r = FileReader::try_new_buffered(file, None)
                    .with_context(|| format!("{}: reading Arrow IPC file", path.display()))?;
                check_schema(path, &r.schema())?;
                Batches::IpcFile(r)
            }
        })
    }

    fn next_batch(&mut self) -> Option<anyhow::Result<RecordBatch>> {
        match self {
            Batches::Parquet(r) => r.next().map(|b| b.map_err(anyhow::Error::from)),
            Batches::IpcStream(r) => r.next().map(|b| b.map_err(anyhow::Error::from)),
            Batches::IpcFile(r) => r.next().map(|b| b.map_err(anyhow::Error::from)),
        }
    }
}

/// One record batch's columns in their decoded types.
struct Columns {
    rows: usize,
    duration: ArrayRef,
    protocol: ArrayRef,
    tokens: ArrayRef,
    directions: ArrayRef,
    bytes: ArrayRef,
    iats: ArrayRef,
    counts: ArrayRef,
    labels: Option<ArrayRef>,
    /// The [`IDENTITY`] columns, in that order, where present.
    identity: [Option<ArrayRef>; 7],
}

impl Columns {
    fn of(path: &Path, batch: &RecordBatch) -> anyhow::Result<Columns> {
        let get = |name: &str, want: &DataType| -> anyhow::Result<Option<ArrayRef>> {
            let Some(col) = batch.column_by_name(name) else {
                return Ok(None);
            };
            if same_layout(col.data_type(), want) {
                return Ok(Some(col.clone()));
            }
            cast(col, want).map(Some).with_context(|| {
                format!(
                    "{}: column `{name}`: casting {} to {want}",
                    path.display(),
                    col.data_type()
                )
            })
        };
        let [duration, protocol, tokens, directions, bytes, iats, counts, labels] =
            wanted_columns().map(|(name, want)| (name, get(name, &want)));
        let required = |(name, col): (&str, anyhow::Result<Option<ArrayRef>>)| {
            col?.ok_or_else(|| anyhow!("{}: required column `{name}` is missing", path.display()))
        };
        Ok(Columns {
            rows: batch.num_rows(),
            duration: required(duration)?,
            protocol: required(protocol)?,
            tokens: required(tokens)?,
            directions: required(directions)?,
            bytes: required(bytes)?,
            iats: required(iats)?,
            counts: required(counts)?,
            labels: labels.1?,
            // An identity column that does not cast is left out, not an error.
            identity: IDENTITY.map(|(name, want)| get(name, &want).ok().flatten()),
        })
    }

    fn identity(&self, row: usize) -> FlowIdentity {
        let valid = |i: usize| self.identity[i].as_ref().filter(|c| c.is_valid(row));
        let string = |i: usize| valid(i).map(|c| c.as_string::<i32>().value(row).to_string());
        let port = |i: usize| valid(i).map(|c| c.as_primitive::<UInt16Type>().value(row));
        FlowIdentity {
            flow_id: valid(0).map(|c| c.as_primitive::<UInt64Type>().value(row)),
            source: string(1),
            src_ip: string(2),
            dst_ip: string(3),
            src_port: port(4),
            dst_port: port(5),
            start_time_us: valid(6).map(|c| c.as_primitive::<Int64Type>().value(row)),
        }
    }

    /// Decodes row `row`; `Err` says why the row is malformed.
    fn example(&self, row: usize) -> Result<FlowExample, String> {
        let duration = self.duration.as_primitive::<UInt64Type>();
        let protocol = self.protocol.as_primitive::<UInt16Type>();
        if duration.is_null(row) {
            return Err("flow_duration is null".into());
        }
        if protocol.is_null(row) {
            return Err("protocol is null or out of range".into());
        }
        let protocol = u8::try_from(protocol.value(row))
            .map_err(|_| format!("protocol {} is not an IP protocol", protocol.value(row)))?;

        let tokens = self.tokens.as_list::<i32>();
        let bursts = list_range(tokens, row, BURST_TOKENS)?;
        let n = bursts.len();
        let directions = self.directions.as_list::<i32>();
        let bytes = self.bytes.as_list::<i32>();
        let iats = self.iats.as_list::<i32>();
        let counts = self.counts.as_list::<i32>();
        let ranges = [
            (DIRECTIONS, list_range(directions, row, DIRECTIONS)?),
            (BYTES, list_range(bytes, row, BYTES)?),
            (IATS, list_range(iats, row, IATS)?),
            (COUNTS, list_range(counts, row, COUNTS)?),
        ];
        for (name, r) in &ranges {
            if r.len() != n {
                return Err(format!("{name} has {} items for {n} bursts", r.len()));
            }
        }
        let directions = directions.values().as_boolean();
        let bytes = bytes.values().as_primitive::<UInt32Type>();
        let iats = iats.values().as_primitive::<UInt64Type>();
        let counts = counts.values().as_primitive::<UInt32Type>();
        let [(_, d), (_, b), (_, i), (_, c)] = &ranges;
        for ((name, r), values) in ranges.iter().zip([
            directions as &dyn Array,
            bytes as &dyn Array,
            iats as &dyn Array,
            counts as &dyn Array,
        ]) {
            if has_null(values, r.clone()) {
                return Err(format!("{name} has a null item"));
            }
        }
        let burst_lists = tokens.values().as_list::<i32>();
        let token_values = burst_lists.values().as_primitive::<UInt16Type>();
        let mut out = TokenizedFlow {
            bursts: Vec::with_capacity(n),
            ..TokenizedFlow::default()
        };
        for k in 0..n {
            let toks = list_range(burst_lists, bursts.start + k, "a burst of burst_tokens")?;
            if has_null(token_values, toks.clone()) {
                return Err(format!("burst {k} has a null token"));
            }
            let burst = Burst {
                token_len: 0,
                forward: directions.value(d.start + k),
                bytes: bytes.value(b.start + k),
                count: counts.value(c.start + k),
                iat_us: iats.value(i.start + k),
                start_ns: 0,
            };
            out.push_burst(burst, &token_values.values()[toks]);
        }
        let label = self
            .labels
            .as_ref()
            .map(|l| l.as_string::<i32>())
            .filter(|l| l.is_valid(row))
            .map(|l| l.value(row).to_string());
        out.flow_duration_us = duration.value(row);
        out.protocol = protocol;
        out.packets = out.bursts.iter().map(|b| u64::from(b.count)).sum();
        Ok(FlowExample {
            flow: out,
            label,
            id: self.identity(row),
            file: 0,
        })
    }
}

/// Whether any of `values[range]` is null.
fn has_null(values: &dyn Array, mut range: std::ops::Range<usize>) -> bool {
    values.null_count() > 0 && range.any(|j| values.is_null(j))
}

/// The child index range of list `row`; a null list is malformed.
fn list_range(list: &ListArray, row: usize, name: &str) -> Result<std::ops::Range<usize>, String> {
    if list.is_null(row) {
        return Err(format!("{name} is null"));
    }
    let offsets = list.value_offsets();
    // Offsets of a valid ListArray are non-negative and non-decreasing.
    Ok(offsets[row] as usize..offsets[row + 1] as usize)
}

/// The dataset files under `path`, sorted: `path` itself when it is a file; below a
/// directory, every Parquet or Arrow IPC file, skipping hidden (`.x`, `_x`) and `.tmp`
/// names, which writers use for incomplete files.
fn dataset_files(path: &Path) -> anyhow::Result<Vec<(PathBuf, Format)>> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if !meta.is_dir() {
        let format = sniff(path)?.ok_or_else(|| {
            anyhow!(
                "{}: not a Parquet or Arrow IPC file (no PAR1/ARROW1/IPC stream magic)",
                path.display()
            )
        })?;
        return Ok(vec![(path.to_path_buf(), format)]);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') || name.ends_with(".tmp") {
                continue;
            }
            let p = entry.path();
            // Follows symlinks, as a dataset assembled from links should read.
            let meta = std::fs::metadata(&p).with_context(|| format!("{}", p.display()))?;
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                match sniff(&p)? {
                    Some(format) => files.push((p, format)),
                    None => log::warn!("{}: not a Parquet or Arrow IPC file, ignored", p.display()),
                }
            }
        }
    }
    if files.is_empty() {
        bail!(
            "{}: no Parquet or Arrow IPC dataset files in this directory",
            path.display()
        );
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// Streams [`FlowExample`]s out of a dataset. See the module docs.
pub struct DatasetReader {
    paths: Vec<PathBuf>,
    formats: Vec<Format>,
    /// Index of the next file to open.
    next_file: usize,
    current: Option<Current>,
    skipped: u64,
}

/// The file being read and its current batch.
struct Current {
    path: PathBuf,
    batches: Batches,
    batch: Option<Columns>,
    row: usize,
    /// Rows of this file before the current batch, for messages.
    rows_before: u64,
    warned: bool,
}

impl DatasetReader {
    /// Opens a dataset file or directory. Every file's format and schema is checked here,
    /// so a dataset that cannot be read fails now rather than hours into training.
    pub fn open(path: &Path) -> anyhow::Result<DatasetReader> {
        let files = dataset_files(path)?;
        for (p, format) in &files {
            Batches::open(p, *format)?;
        }
        let (paths, formats) = files.into_iter().unzip();
        Ok(DatasetReader {
            paths,
            formats,
            next_file: 0,
            current: None,
            skipped: 0,
        })
    }

    /// The dataset files, in reading order.
    pub fn files(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Malformed rows skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl Iterator for DatasetReader {
    type Item = anyhow::Result<FlowExample>;

    /// The next flow. An error (an unreadable batch) ends its file; the following call
    /// goes on with the next file.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(cur) = self.current.as_mut() else {
                let i = self.next_file;
                let path = self.paths.get(i)?.clone();
                self.next_file += 1;
                match Batches::open(&path, self.formats[i]) {
                    Ok(batches) => {
                        self.current = Some(Current {
                            path,
                            batches,
                            batch: None,
                            row: 0,
                            rows_before: 0,
                            warned: false,
                        })
                    }
                    Err(e) => return Some(Err(e)),
                }
                continue;
            };
            if let Some(cols) = &cur.batch {
                if cur.row < cols.rows {
                    let row = cur.row;
                    cur.row += 1;
                    match cols.example(row) {
                        Ok(mut ex) => {
                            ex.file = self.next_file - 1;
                            return Some(Ok(ex));
                        }
                        Err(why) => {
                            self.skipped += 1;
                            if !cur.warned {
                                cur.warned = true;
                                log::warn!(
                                    "{}: row {}: {why}; skipped (further malformed rows of this file are only counted)",
                                    cur.path.display(),
                                    cur.rows_before + row as u64
                                );
                            }
                            continue;
                        }
                    }
                }
                cur.rows_before += cols.rows as u64;
                cur.batch = None;
                cur.row = 0;
            }
            match cur.batches.next_batch() {
                None => self.current = None,
                Some(Ok(batch)) => match Columns::of(&cur.path, &batch) {
                    Ok(cols) => cur.batch = Some(cols),
                    Err(e) => {
                        self.current = None;
                        return Some(Err(e));
                    }
                },
                Some(Err(e)) => {
                    let e = e.context(format!(
                        "{}: reading the record batch after row {}",
                        cur.path.display(),
                        cur.rows_before
                    ));
                    self.current = None;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The rows of one dataset file by their `source` column (the capture file each flow came
/// from), in first-seen order; one `(None, rows)` entry for a file without that column
/// (netFound's schema). Reads only that column.
pub fn row_sources(path: &Path) -> anyhow::Result<Vec<(Option<String>, u64)>> {
    let format = sniff(path)?
        .ok_or_else(|| anyhow!("{}: not a Parquet or Arrow IPC file", path.display()))?;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut counts: Vec<(Option<String>, u64)> = Vec::new();
    let mut add = |source: Option<&str>, n: u64| match counts
        .iter_mut()
        .find(|(s, _)| s.as_deref() == source)
    {
        Some(entry) => entry.1 += n,
        None => counts.push((source.map(str::to_string), n)),
    };
    let mut count_batch = |batch: &RecordBatch| -> anyhow::Result<()> {
        match batch.column_by_name("source") {
            Some(col) => {
                let col = cast(col, &DataType::Utf8)
                    .with_context(|| format!("{}: column `source`", path.display()))?;
                let col = col.as_string::<i32>();
                for i in 0..col.len() {
                    add(col.is_valid(i).then(|| col.value(i)), 1);
                }
            }
            None => add(None, batch.num_rows() as u64),
        }
        Ok(())
    };
    let context = || format!("{}: reading the source column", path.display());
    match format {
        Format::Parquet => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .with_context(|| format!("{}: reading Parquet footer", path.display()))?;
            match builder.schema().index_of("source") {
                Ok(i) => {
                    let mask = ProjectionMask::roots(builder.parquet_schema(), [i]);
                    let reader = builder
                        .with_projection(mask)
                        .with_batch_size(8 * BATCH_ROWS)
                        .build()
                        .with_context(context)?;
                    for batch in reader {
                        count_batch(&batch.with_context(context)?)?;
                    }
                }
                Err(_) => {
                    let rows = builder.metadata().file_metadata().num_rows();
                    add(None, rows.max(0) as u64);
                }
            }
        }
        Format::IpcStream => {
            let r = StreamReader::try_new_buffered(file, None).with_context(context)?;
            for batch in r {
                count_batch(&batch.with_context(context)?)?;
            }
        }
        Format::IpcFile => {
            let r = FileReader::try_new_buffered(file, None).with_context(context)?;
            for batch in r {
                count_batch(&batch.with_context(context)?)?;
            }
        }
    }
    Ok(counts)
}

/// The dataset files under `path` (a file or a directory), in reading order; see
/// [`DatasetReader::open`].
pub fn files_of(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(dataset_files(path)?.into_iter().map(|(p, _)| p).collect())
}

/// Reads up to `limit` flows (all when `None`) of the dataset at `path`; the first error
/// ends the read.
pub fn read_all(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<FlowExample>> {
    let reader = DatasetReader::open(path)?;
    reader.take(limit.unwrap_or(usize::MAX)).collect()
}
