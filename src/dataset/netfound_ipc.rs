//! netFound's dataset format: an Arrow IPC *stream* with netFound's exact schema, one row
//! per flow, as `Tokenize.py` writes it (or, with [`IpcFormat::File`], the same batches
//! in the random-access IPC *file* format that `pyarrow.ipc.open_file`,
//! `pandas.read_feather`, Polars and DuckDB open):
//!
//! ```text
//! flow_duration uint64, burst_tokens list<list<uint16>>, directions list<bool>,
//! bytes list<uint32>, iats list<uint64>, counts list<uint32>, protocol uint16,
//! labels string
//! ```
//!
//! Every field and list item is nullable and list items are named `item` (pyarrow's
//! defaults, as in the golden files); `labels` is null for pretraining data and holds the
//! class name for fine-tuning data. Rows are written in record batches of at most
//! `batch_rows` rows (netFound's `arrow_batch_size` is 1000), so memory is bounded by one
//! batch. The stream goes to `<path>.tmp` and is renamed to `<path>` by
//! [`NetfoundIpcWriter::finish`]; a writer dropped without `finish` removes its temporary
//! file.

use super::burst_columns::{burst_fields, BurstColumnsBuilder, MAX_BATCH_TOKENS};
use arrow::array::{ArrayRef, RecordBatch, StringBuilder, UInt16Builder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::writer::{FileWriter, StreamWriter};
use netfm_tokenizer::TokenizedFlow;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// netFound's `arrow_batch_size` default.
pub const DEFAULT_BATCH_ROWS: usize = 1000;

#[derive(Debug, Error)]
pub enum NetfoundIpcError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: writing Arrow IPC stream: {source}")]
    Arrow { path: PathBuf, source: ArrowError },
    #[error("{path}: a flow of {tokens} tokens is more than one Arrow record batch can hold ({max}); lower --max-bursts or --max-packets-per-burst")]
    FlowTooLarge {
        path: PathBuf,
        tokens: usize,
        max: usize,
    },
}

/// Which Arrow IPC format a netFound-mode file is written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IpcFormat {
    /// The IPC stream format, as netFound writes it (`.arrows`).
    #[default]
    Stream,
    /// The IPC file format, with a footer for random access (`.arrow`, Feather v2).
    File,
}

impl IpcFormat {
    /// The file extension that says which format a file is in.
    pub fn extension(self) -> &'static str {
        match self {
            IpcFormat::Stream => "arrows",
            IpcFormat::File => "arrow",
        }
    }
}

/// An open IPC writer of either format.
enum IpcOut {
    Stream(StreamWriter<BufWriter<File>>),
    File(FileWriter<BufWriter<File>>),
}

impl IpcOut {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        match self {
            IpcOut::Stream(w) => w.write(batch),
            IpcOut::File(w) => w.write(batch),
        }
    }

    fn finish(self) -> Result<BufWriter<File>, ArrowError> {
        match self {
            IpcOut::Stream(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            IpcOut::File(mut w) => {
                w.finish()?;
                w.into_inner()
            }
        }
    }
}

/// The schema of netFound's Arrow output.
pub fn netfound_schema() -> SchemaRef {
    let mut fields = vec![Field::new("flow_duration", DataType::UInt64, true)];
    fields.extend(burst_fields());
    fields.push(Field::new("protocol", DataType::UInt16, true));
    fields.push(Field::new("labels", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// Streams flows into a netFound-compatible Arrow IPC file. See the module docs.
pub struct NetfoundIpcWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    schema: SchemaRef,
    writer: Option<Box<IpcOut>>,
    batch_rows: usize,
    /// Most tokens per record batch (see [`MAX_BATCH_TOKENS`]).
    batch_tokens: usize,
    rows_in_batch: usize,
    rows_written: u64,
    columns: Box<Columns>,
}

/// The current batch's column builders.
struct Columns {
    durations: UInt64Builder,
    bursts: BurstColumnsBuilder,
    protocols: UInt16Builder,
    labels: StringBuilder,
}

impl Columns {
    fn with_capacity(rows: usize) -> Box<Columns> {
        Box::new(Columns {
            durations: UInt64Builder::with_capacity(rows),
            bursts: BurstColumnsBuilder::with_capacity(rows),
            protocols: UInt16Builder::with_capacity(rows),
            labels: StringBuilder::new(),
        })
    }
}

impl NetfoundIpcWriter {
    /// Creates `<path>.tmp` and writes the stream's schema message.
    pub fn create(path: &Path) -> Result<Self, NetfoundIpcError> {
        Self::with_batch_rows(path, DEFAULT_BATCH_ROWS)
    }

    /// Like [`create`](Self::create), with at most `batch_rows` rows per record batch.
    pub fn with_batch_rows(path: &Path, batch_rows: usize) -> Result<Self, NetfoundIpcError> {
        Self::with_batch_limits(path, batch_rows, MAX_BATCH_TOKENS)
    }

    /// Like [`create`](Self::create), with at most `batch_rows` rows and `batch_tokens`
    /// tokens (at most [`MAX_BATCH_TOKENS`]) per record batch.
    pub fn with_batch_limits(
        path: &Path,
        batch_rows: usize,
        batch_tokens: usize,
    ) -> Result<Self, NetfoundIpcError> {
        Self::with_format(path, IpcFormat::Stream, batch_rows, batch_tokens)
    }

    /// Like [`Self::with_batch_limits`], in IPC format `format`.
    pub fn with_format(
        path: &Path,
        format: IpcFormat,
        batch_rows: usize,
        batch_tokens: usize,
    ) -> Result<Self, NetfoundIpcError> {
        let mut tmp = path.as_os_str().to_os_string();
        tmp.push(".tmp");
        let tmp_path = PathBuf::from(tmp);
        let file = File::create(&tmp_path).map_err(|source| NetfoundIpcError::Io {
            path: tmp_path.clone(),
            source,
        })?;
        let schema = netfound_schema();
        let out = BufWriter::new(file);
        let writer = match format {
            IpcFormat::Stream => StreamWriter::try_new(out, &schema).map(IpcOut::Stream),
            IpcFormat::File => FileWriter::try_new(out, &schema).map(IpcOut::File),
        }
        .map_err(|source| NetfoundIpcError::Arrow {
            path: tmp_path.clone(),
            source,
        })?;
        let batch_rows = batch_rows.max(1);
        Ok(NetfoundIpcWriter {
            path: path.to_path_buf(),
            tmp_path,
            schema,
            writer: Some(Box::new(writer)),
            batch_rows,
            batch_tokens: batch_tokens.clamp(1, MAX_BATCH_TOKENS),
            rows_in_batch: 0,
            rows_written: 0,
            columns: Columns::with_capacity(batch_rows),
        })
    }

    /// Appends one flow (one row); `label` is the fine-tuning class, None for pretraining.
    pub fn push(
        &mut self,
        flow: &TokenizedFlow,
        label: Option<&str>,
    ) -> Result<(), NetfoundIpcError> {
        let tokens = flow.tokens.len();
        if tokens > self.batch_tokens {
            return Err(NetfoundIpcError::FlowTooLarge {
                path: self.tmp_path.clone(),
                tokens,
                max: self.batch_tokens,
            });
        }
        // Arrow's 32-bit list offsets: a new batch before this flow would overflow them.
        if self.rows_in_batch > 0 && self.columns.bursts.token_count() + tokens > self.batch_tokens
        {
            self.flush_batch()?;
        }
        let c = &mut self.columns;
        c.durations.append_value(flow.flow_duration_us);
        c.bursts.append(flow);
        c.protocols.append_value(u16::from(flow.protocol));
        c.labels.append_option(label);
        self.rows_in_batch += 1;
        if self.rows_in_batch >= self.batch_rows {
            self.flush_batch()?;
        }
        Ok(())
    }

    /// Rows written so far (including the current, unflushed batch).
    pub fn rows(&self) -> u64 {
        self.rows_written + self.rows_in_batch as u64
    }

    fn arrow_err(&self, source: ArrowError) -> NetfoundIpcError {
        NetfoundIpcError::Arrow {
            path: self.tmp_path.clone(),
            source,
        }
    }

    fn flush_batch(&mut self) -> Result<(), NetfoundIpcError> {
        if self.rows_in_batch == 0 {
            return Ok(());
        }
        let c = std::mem::replace(&mut self.columns, Columns::with_capacity(self.batch_rows));
        let Columns {
            mut durations,
            bursts,
            mut protocols,
            mut labels,
        } = *c;
        let [tokens, directions, bytes, iats, counts] = bursts.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(durations.finish()),
            tokens,
            directions,
            bytes,
            iats,
            counts,
            Arc::new(protocols.finish()),
            Arc::new(labels.finish()),
        ];
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| self.arrow_err(e))?;
        if let Some(w) = self.writer.as_mut() {
            w.write(&batch).map_err(|source| NetfoundIpcError::Arrow {
                path: self.tmp_path.clone(),
                source,
            })?;
        }
        self.rows_written += self.rows_in_batch as u64;
        self.rows_in_batch = 0;
        Ok(())
    }

    /// Writes the last batch and the end-of-stream marker, then renames the temporary file
    /// to its final name, which it returns.
    pub fn finish(mut self) -> Result<PathBuf, NetfoundIpcError> {
        self.flush_batch()?;
        if let Some(w) = self.writer.take() {
            let buf = w.finish().map_err(|e| self.arrow_err(e))?;
            let file = buf.into_inner().map_err(|e| NetfoundIpcError::Io {
                path: self.tmp_path.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(|source| NetfoundIpcError::Io {
                path: self.tmp_path.clone(),
                source,
            })?;
        }
        std::fs::rename(&self.tmp_path, &self.path).map_err(|source| NetfoundIpcError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(self.path.clone())
    }
}

impl Drop for NetfoundIpcWriter {
    fn drop(&mut self) {
        if self.writer.is_some() {
            // Not finished: leave no partial file behind.
            self.writer = None;
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{UInt16Type, UInt64Type};
    use arrow::ipc::reader::StreamReader;

    fn flow(n: u16) -> TokenizedFlow {
        TokenizedFlow {
            flow_duration_us: u64::from(n) * 10,
            ..crate::dataset::one_burst_flow(n, 12, n.is_multiple_of(2))
        }
    }

    #[test]
    fn writes_bounded_batches_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.arrow");
        let mut w = NetfoundIpcWriter::with_batch_rows(&path, 2).unwrap();
        for n in 0..5 {
            w.push(&flow(n), if n == 3 { Some("web") } else { None })
                .unwrap();
        }
        assert!(!path.exists());
        assert_eq!(w.rows(), 5);
        assert_eq!(w.finish().unwrap(), path);
        assert!(path.exists());
        let r = StreamReader::try_new(File::open(&path).unwrap(), None).unwrap();
        assert_eq!(r.schema(), netfound_schema());
        let batches: Vec<RecordBatch> = r.map(|b| b.unwrap()).collect();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        let b = &batches[1];
        assert_eq!(b.column(0).as_primitive::<UInt64Type>().value(1), 30);
        assert_eq!(b.column(6).as_primitive::<UInt16Type>().value(0), 17);
        let labels = b.column(7).as_string::<i32>();
        assert!(labels.is_null(0));
        assert_eq!(labels.value(1), "web");
    }

    #[test]
    fn batches_are_bounded_by_tokens_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.arrow");
        // 12 tokens a flow, at most 30 a batch: batches of 2 flows.
        let mut w = NetfoundIpcWriter::with_batch_limits(&path, 100, 30).unwrap();
        for n in 0..5 {
            w.push(&flow(n), None).unwrap();
        }
        let big = crate::dataset::one_burst_flow(9, 31, true);
        let err = w.push(&big, None).unwrap_err();
        assert!(err.to_string().contains("31 tokens"), "{err}");
        w.finish().unwrap();
        let r = StreamReader::try_new(File::open(&path).unwrap(), None).unwrap();
        let batches: Vec<RecordBatch> = r.map(|b| b.unwrap()).collect();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
    }

    #[test]
    fn the_file_format_opens_for_random_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.arrow");
        let mut w =
            NetfoundIpcWriter::with_format(&path, IpcFormat::File, 2, MAX_BATCH_TOKENS).unwrap();
        for n in 0..5 {
            w.push(&flow(n), None).unwrap();
        }
        w.finish().unwrap();
        let r = arrow::ipc::reader::FileReader::try_new(File::open(&path).unwrap(), None).unwrap();
        assert_eq!(r.num_batches(), 3);
        assert_eq!(r.schema(), netfound_schema());
        // The stream reader refuses it: the formats differ, which the extension says.
        assert!(StreamReader::try_new(File::open(&path).unwrap(), None).is_err());
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.arrow");
        {
            let mut w = NetfoundIpcWriter::create(&path).unwrap();
            w.push(&flow(1), None).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
