//! `netfm predict` (flow classes from a fine-tuned model, one Parquet row per flow) and
//! `netfm export` (a model as one self-contained ONNX file).
//!
//! `predict`'s columns after the identity columns ([`super::flow_output`]):
//! `predicted_class` (the most probable class's name), `probability` (its softmax
//! probability), then `prob_<class>` for every class in the head's order; the footer's
//! `netfm.classes` lists the classes.
//!
//! `export` writes the inference graph with the weights inside; its `metadata_props` hold
//! netfm's version, the model's config, vocabulary and (for a classifier) `netfm.classes`,
//! so the file alone says how to feed it and what its outputs mean.

use super::flow_output::{batches_of, check_out, flows_bar, provenance, FlowWriter, RowId};
use super::model::{load, LoadedModel};
use crate::cli::{ExportArgs, PredictArgs};
use crate::runtime::encoder::Encoder;
use crate::runtime::RuntimeOptions;
use crate::train::collate::{inference_batch, Layout};
use crate::train::data::Catalog;
use anyhow::{bail, Context};
use arrow::array::{ArrayRef, Float32Array, StringArray};
use arrow::datatypes::{DataType, Field};
use netfm_models::export::inference_graph;
use netfm_models::proto::{ModelProto, StringStringEntryProto};
use netfm_models::{Data, InputLayout};
use netfm_tokenizer::TokenizedFlow;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The model's inference graph with its weights and self-description.
fn inference_model(model: &LoadedModel) -> anyhow::Result<ModelProto> {
    let ck = &model.checkpoint;
    let mut cfg = ck.config.clone();
    cfg.layout = InputLayout::Packed;
    let mut proto = inference_graph(&cfg, &ck.params, ck.dtype)
        .context("the model's parameters do not fit its config")?;
    let mut add = |k: &str, v: String| {
        proto.metadata_props.push(StringStringEntryProto {
            key: k.to_string(),
            value: v,
        })
    };
    add("netfm.version", env!("CARGO_PKG_VERSION").to_string());
    add("netfm.step", ck.step.to_string());
    if let Some(names) = model.class_names() {
        add("netfm.classes", serde_json::to_string(&names)?);
    }
    Ok(proto)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PredictSummary {
    pub out: PathBuf,
    pub flows: u64,
    pub flows_without_bursts: u64,
    pub malformed_rows: u64,
    pub elapsed_s: f64,
    pub flows_per_s: f64,
    /// Flows predicted per class.
    pub per_class: Vec<(String, u64)>,
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = row.iter().map(|&x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

pub fn predict(args: &PredictArgs, opts: &RuntimeOptions) -> anyhow::Result<PredictSummary> {
    let started = Instant::now();
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    check_out(&args.out, args.overwrite)?;
    let model = load(&args.model)?;
    let c = model.checkpoint.config.num_classes;
    let classes = match model.class_names() {
        Some(n) if n.len() == c && c > 0 => n,
        _ if c == 0 => bail!(
            "{}: a model without a classification head (pretrained only?); `netfm finetune` makes one",
            args.model.display()
        ),
        _ => bail!(
            "{}: no class names for its {c} classes (a `netfm finetune` run folder has them in run.json)",
            args.model.display()
        ),
    };
    let proto = inference_model(&model)?;
    let mut encoder = Encoder::from_bytes(opts, &proto.to_bytes())?;
    let layout: Layout = encoder.layout.clone();
    let catalog = Catalog::open(&args.data)?;
    let mut extra = vec![
        Field::new("predicted_class", DataType::Utf8, false),
        Field::new("probability", DataType::Float32, false),
    ];
    extra.extend(
        classes
            .iter()
            .map(|n| Field::new(format!("prob_{n}"), DataType::Float32, false)),
    );
    let footer = provenance(
        json!({"checkpoint": model.path, "step": model.checkpoint.step}),
        &catalog,
        vec![("netfm.classes".into(), serde_json::to_string(&classes)?)],
    )?;
    let mut writer = FlowWriter::create(&args.out, extra, footer)?;
    let bar = flows_bar(catalog.rows(), args.quiet);
    let mut summary = PredictSummary {
        out: args.out.clone(),
        ..PredictSummary::default()
    };
    let mut per_class = vec![0u64; c];
    let skipped = batches_of(&catalog.paths(), args.batch_size, &bar, |pending, file| {
        let refs: Vec<&TokenizedFlow> = pending.iter().map(|e| &e.flow).collect();
        let out = encoder.run_batch(&inference_batch(&refs, &layout).feeds())?;
        let Some(Data::F32(logits)) = out.get("class_logits").map(|t| &t.data) else {
            bail!("the model has no float32 class_logits output");
        };
        let mut names = Vec::with_capacity(pending.len());
        let mut best_p = Vec::with_capacity(pending.len());
        let mut cols: Vec<Vec<f32>> = vec![Vec::with_capacity(pending.len()); c];
        for row in logits.chunks(c) {
            let p = softmax(row);
            let (k, pk) =
                p.iter()
                    .enumerate()
                    .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b });
            per_class[k] += 1;
            names.push(classes[k].as_str());
            best_p.push(pk);
            for (j, x) in p.into_iter().enumerate() {
                cols[j].push(x);
            }
        }
        let rows: Vec<RowId> = pending
            .iter()
            .map(|e| RowId {
                id: &e.id,
                protocol: e.flow.protocol,
                dataset_file: file,
            })
            .collect();
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(names)),
            Arc::new(Float32Array::from(best_p)),
        ];
        arrays.extend(
            cols.into_iter()
                .map(|v| Arc::new(Float32Array::from(v)) as ArrayRef),
        );
        writer.write(&rows, arrays)
    })?;
    summary.flows_without_bursts = skipped.flows_without_bursts;
    summary.malformed_rows = skipped.malformed_rows;
    bar.finish_and_clear();
    summary.flows = writer.finish()?;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.flows_per_s = summary.flows as f64 / summary.elapsed_s.max(1e-9);
    summary.per_class = classes.into_iter().zip(per_class).collect();
    Ok(summary)
}

impl std::fmt::Display for PredictSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "predict    {} flows in {:.1} s ({:.0} flows/s)",
            super::thousands(self.flows),
            self.elapsed_s,
            self.flows_per_s
        )?;
        if self.flows_without_bursts + self.malformed_rows > 0 {
            writeln!(
                f,
                "skipped    {} flows without bursts, {} malformed rows",
                self.flows_without_bursts, self.malformed_rows
            )?;
        }
        let classes: Vec<String> = self
            .per_class
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        writeln!(f, "classes    {}", classes.join(", "))?;
        writeln!(f, "output     {}", self.out.display())
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ExportSummary {
    pub out: PathBuf,
    pub bytes: u64,
    pub nodes: usize,
    pub classes: Option<Vec<String>>,
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "export     {} ({} bytes, {} nodes)",
            self.out.display(),
            self.bytes,
            self.nodes
        )?;
        if let Some(c) = &self.classes {
            writeln!(f, "classes    {}", c.join(", "))?;
        }
        Ok(())
    }
}

pub fn export(args: &ExportArgs) -> anyhow::Result<ExportSummary> {
    check_out(&args.out, args.overwrite)?;
    let model = load(&args.model)?;
    let proto = inference_model(&model)?;
    let bytes = proto.to_bytes();
    let dir = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let name = args
        .out
        .file_name()
        .context("--out names no file")?
        .to_string_lossy()
        .into_owned();
    crate::dataset::output::write_atomic(&dir, &name, &bytes)?;
    Ok(ExportSummary {
        out: args.out.clone(),
        bytes: bytes.len() as u64,
        nodes: proto.graph.as_ref().map_or(0, |g| g.node.len()),
        classes: model.class_names(),
    })
}
