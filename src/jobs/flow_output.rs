//! One Parquet file of per-flow results (`embed`, `predict`): the flow's identity columns,
//! then the job's own columns. The file is written under a hidden temporary name beside its
//! final one and renamed when complete, so a reader never sees a partial file; its footer
//! says what made it (`netfm.*` keys: version, command, model, inputs, settings).

use crate::dataset::reader::{DatasetReader, FlowExample, FlowIdentity};
use anyhow::{bail, Context};
use arrow::array::{
    ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt16Array, UInt64Array,
    UInt8Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A flow's identity as written: its dataset file too, for rows without a `source`.
pub struct RowId<'a> {
    pub id: &'a FlowIdentity,
    pub protocol: u8,
    pub dataset_file: &'a str,
}

/// The identity columns every per-flow output starts with.
fn identity_fields() -> Vec<Field> {
    vec![
        Field::new("flow_id", DataType::UInt64, true),
        Field::new("source", DataType::Utf8, true),
        Field::new("src_ip", DataType::Utf8, true),
        Field::new("dst_ip", DataType::Utf8, true),
        Field::new("src_port", DataType::UInt16, true),
        Field::new("dst_port", DataType::UInt16, true),
        Field::new("protocol", DataType::UInt8, false),
        Field::new(
            "start_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("dataset_file", DataType::Utf8, false),
    ]
}

fn identity_columns(rows: &[RowId]) -> Vec<ArrayRef> {
    vec![
        Arc::new(rows.iter().map(|r| r.id.flow_id).collect::<UInt64Array>()),
        Arc::new(
            rows.iter()
                .map(|r| r.id.source.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.id.src_ip.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.id.dst_ip.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(rows.iter().map(|r| r.id.src_port).collect::<UInt16Array>()),
        Arc::new(rows.iter().map(|r| r.id.dst_port).collect::<UInt16Array>()),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.protocol))
                .collect::<UInt8Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.id.start_time_us)
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.dataset_file))
                .collect::<StringArray>(),
        ),
    ]
}

/// The footer keys of a per-flow output: netfm's version, the command, the model, the input
/// files (path, bytes, rows), then the job's own `extra` keys.
pub fn provenance(
    model: serde_json::Value,
    catalog: &crate::train::data::Catalog,
    extra: Vec<(String, String)>,
) -> anyhow::Result<Vec<(String, String)>> {
    let inputs: Vec<serde_json::Value> = catalog
        .files
        .iter()
        .map(|f| serde_json::json!({"path": f.path, "bytes": f.bytes, "rows": f.rows()}))
        .collect();
    let mut keys = vec![
        (
            "netfm.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "netfm.command".into(),
            serde_json::to_string(&std::env::args().collect::<Vec<_>>())?,
        ),
        ("netfm.model".into(), model.to_string()),
        (
            "netfm.inputs".into(),
            serde_json::Value::from(inputs).to_string(),
        ),
    ];
    keys.extend(extra);
    Ok(keys)
}

/// What [`batches_of`] skipped.
#[derive(Clone, Copy, Debug, Default)]
pub struct Skipped {
    pub flows_without_bursts: u64,
    pub malformed_rows: u64,
}

/// Reads every flow of `files` in order and hands them to `f` in batches of `batch_size`
/// (never across dataset files), with the batch's dataset file; flows without bursts are
/// skipped and counted, as are malformed rows. A damaged file is an error naming it.
pub fn batches_of(
    files: &[PathBuf],
    batch_size: usize,
    bar: &indicatif::ProgressBar,
    mut f: impl FnMut(&[FlowExample], &str) -> anyhow::Result<()>,
) -> anyhow::Result<Skipped> {
    let mut skipped = Skipped::default();
    let mut pending: Vec<FlowExample> = Vec::with_capacity(batch_size);
    for path in files {
        let file = path.display().to_string();
        let mut reader = DatasetReader::open(path)?;
        for ex in reader.by_ref() {
            let ex =
                ex.with_context(|| format!("{file} is damaged (remove it or tokenize it again)"))?;
            bar.inc(1);
            if ex.flow.bursts.is_empty() {
                skipped.flows_without_bursts += 1;
                continue;
            }
            pending.push(ex);
            if pending.len() == batch_size {
                f(&pending, &file)?;
                pending.clear();
            }
        }
        if !pending.is_empty() {
            f(&pending, &file)?;
            pending.clear();
        }
        skipped.malformed_rows += reader.skipped();
    }
    Ok(skipped)
}

/// A flows progress bar on stderr (hidden with `quiet`).
pub fn flows_bar(total: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(total);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} flows  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b
}

/// Checks that `out` may be written: refused if it exists, unless `overwrite` (and it is a
/// file, not a folder).
pub fn check_out(out: &Path, overwrite: bool) -> anyhow::Result<()> {
    if out.is_dir() {
        bail!(
            "{} is a folder; --out names the Parquet file to write",
            out.display()
        );
    }
    if out.exists() && !overwrite {
        bail!("{} exists; --overwrite replaces it", out.display());
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!("{}: no such folder", parent.display());
        }
    }
    Ok(())
}

/// Writes per-flow rows to a temporary file, renamed to `out` by [`FlowWriter::finish`].
pub struct FlowWriter {
    writer: Option<ArrowWriter<File>>,
    schema: Arc<Schema>,
    tmp: PathBuf,
    out: PathBuf,
    rows: u64,
}

impl FlowWriter {
    /// `extra`: the job's columns after the identity columns; `footer`: `netfm.*` keys.
    pub fn create(
        out: &Path,
        extra: Vec<Field>,
        footer: Vec<(String, String)>,
    ) -> anyhow::Result<FlowWriter> {
        let mut fields = identity_fields();
        fields.extend(extra);
        let schema = Arc::new(Schema::new(fields));
        let name = out
            .file_name()
            .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
        let tmp = out.with_file_name(format!(".{name}.tmp"));
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_key_value_metadata(Some(
                footer
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .collect(),
            ))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        Ok(FlowWriter {
            writer: Some(writer),
            schema,
            tmp,
            out: out.to_path_buf(),
            rows: 0,
        })
    }

    /// Appends rows: their identities and the job's columns, in schema order.
    pub fn write(&mut self, rows: &[RowId], extra: Vec<ArrayRef>) -> anyhow::Result<()> {
        let mut cols = identity_columns(rows);
        cols.extend(extra);
        let batch = RecordBatch::try_new(self.schema.clone(), cols)?;
        self.writer
            .as_mut()
            .context("writer already finished")?
            .write(&batch)
            .with_context(|| format!("writing {}", self.tmp.display()))?;
        self.rows += rows.len() as u64;
        Ok(())
    }

    /// Closes the file and moves it to its final name; returns the rows written. An output
    /// without rows is refused and its temporary file removed: outputs are complete or absent.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        if self.rows == 0 {
            bail!("the data holds no flows with bursts; nothing written");
        }
        let w = self.writer.take().context("writer already finished")?;
        w.close()
            .with_context(|| format!("closing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.out).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.out.display())
        })?;
        Ok(self.rows)
    }
}

impl Drop for FlowWriter {
    fn drop(&mut self) {
        // Not finished (an error on the way): leave nothing behind.
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
