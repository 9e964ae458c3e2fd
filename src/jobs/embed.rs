//! `netfm embed`: one row per flow with its embedding and anomaly scores.
//!
//! Columns after the identity columns ([`super::flow_output`]):
//! - `bursts`: the bursts the model read (at most its `max_bursts`);
//! - `embedding`: `fixed_size_list<float32>[hidden]`, the mean of the flow's final burst CLS
//!   states (the inference graph's `embedding` output);
//! - `anomaly_score`: the flow's mean masked-token loss (nats) under the fixed masking of
//!   [`crate::train::collate::score_batch`]: in burst `k`, field token slot `j` is masked when
//!   `(j + k) % 3 == 0`, every such token replaced by MASK, nothing else corrupted; null for
//!   a flow with no such slot (a single burst of fewer than three tokens). High = the model
//!   finds the flow's header fields hard to predict from their context;
//! - `swap_score`: the mean over its bursts of the swapped-burst head's logit on the clean
//!   flow (high = bursts that look as if they came from another flow);
//! - `scored_tokens`: how many tokens `anomaly_score` averages.
//!
//! Each batch runs through two graphs with the weights baked in: the inference graph on the
//! clean flows, the score graph on the masked ones. Flows without bursts are skipped and
//! counted.

use super::flow_output::{batches_of, check_out, flows_bar, provenance, FlowWriter, RowId};
use super::model::load;
use crate::cli::EmbedArgs;
use crate::runtime::encoder::Encoder;
use crate::runtime::{host, session_from_bytes, RuntimeOptions};
use crate::train::collate::{inference_batch, score_batch, Layout};
use crate::train::data::Catalog;
use anyhow::{bail, Context};
use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, UInt32Array};
use arrow::datatypes::{DataType, Field};
use netfm_models::export::{inference_graph, score_graph};
use netfm_models::{Data, InputLayout, Tensor};
use netfm_tokenizer::TokenizedFlow;
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Default, Serialize)]
pub struct EmbedSummary {
    pub out: PathBuf,
    pub flows: u64,
    pub flows_without_bursts: u64,
    pub malformed_rows: u64,
    pub hidden: usize,
    pub elapsed_s: f64,
    /// Loading the model and building its sessions.
    pub setup_s: f64,
    /// Flows per second of the reading, batching, model runs and writing (after setup).
    pub flows_per_s: f64,
    pub mean_anomaly_score: f64,
    /// What the model computed, over both passes (for FLOP counts: benches/train_layout.py).
    pub cost: Cost,
}

/// Work done by the model's passes: token slots, slots × their row length (attention),
/// cross-burst grid cells, cells × bursts per flow, bursts, and masked positions decoded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cost {
    pub slots: u64,
    pub slot_row_len: u64,
    pub grid: u64,
    pub grid_len: u64,
    pub bursts: u64,
    pub masked: u64,
    pub real_tokens: u64,
}

impl Cost {
    fn add(&mut self, b: &crate::train::collate::Batch) {
        let (row_len, grid) = b.shape_stats();
        self.slots += b.slots as u64;
        self.slot_row_len += (b.slots * row_len) as u64;
        self.grid += grid as u64;
        self.grid_len += (grid * grid / b.flows.max(1)) as u64;
        self.bursts += b.bursts as u64;
        self.masked += b.masked_flow.len() as u64;
        self.real_tokens += b.real_tokens() as u64;
    }
}

fn floats(t: &Tensor) -> anyhow::Result<&[f32]> {
    match &t.data {
        Data::F32(v) => Ok(v),
        _ => bail!("expected a float32 output"),
    }
}

/// The per-flow results of one batch.
struct Scored {
    embedding: Vec<f32>,
    swap: Vec<f32>,
    score: Vec<Option<f32>>,
    scored: Vec<u32>,
    bursts: Vec<u32>,
}

struct Embedder {
    cost: Cost,
    encoder: Encoder,
    scorer: Option<ort::session::Session>,
    layout: Layout,
    hidden: usize,
}

impl Embedder {
    fn run(&mut self, flows: &[&TokenizedFlow]) -> anyhow::Result<Scored> {
        let batch = inference_batch(flows, &self.layout);
        self.cost.add(&batch);
        let out = self.encoder.run_batch(&batch.feeds())?;
        let embedding = floats(out.get("embedding").context("no embedding output")?)?.to_vec();
        let swap_logits = floats(out.get("swap_logits").context("no swap_logits output")?)?;
        let n = match self.layout.input {
            InputLayout::Packed => 0,
            InputLayout::Dense => batch.get("input_ids").map_or(0, |t| t.dims[1] as usize),
        };
        let mut swap = Vec::with_capacity(flows.len());
        let mut bursts = Vec::with_capacity(flows.len());
        let mut at = 0;
        for (f, flow) in flows.iter().enumerate() {
            let c = flow.bursts.len().min(self.layout.max_bursts);
            let start = match self.layout.input {
                InputLayout::Packed => at,
                InputLayout::Dense => f * n,
            };
            let s: f32 = swap_logits[start..start + c].iter().sum();
            swap.push(s / c.max(1) as f32);
            bursts.push(c as u32);
            at += c;
        }
        let mut sum = vec![0f64; flows.len()];
        let mut count = vec![0u32; flows.len()];
        if let Some(scorer) = self.scorer.as_mut() {
            let sb = score_batch(flows, &self.layout);
            if !sb.masked_flow.is_empty() {
                self.cost.add(&sb);
                let out = host::run(scorer, &sb.feeds())?;
                let losses = floats(out.get("token_loss").context("no token_loss output")?)?;
                for (&f, &l) in sb.masked_flow.iter().zip(losses) {
                    sum[f as usize] += l as f64;
                    count[f as usize] += 1;
                }
            }
        }
        let score = sum
            .iter()
            .zip(&count)
            .map(|(&s, &c)| (c > 0).then(|| (s / c as f64) as f32))
            .collect();
        Ok(Scored {
            embedding,
            swap,
            score,
            scored: count,
            bursts,
        })
    }
}

pub fn run(args: &EmbedArgs, opts: &RuntimeOptions) -> anyhow::Result<EmbedSummary> {
    let started = Instant::now();
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    check_out(&args.out, args.overwrite)?;
    let model = load(&args.model)?;
    let ck = &model.checkpoint;
    let mut cfg = ck.config.clone();
    cfg.layout = InputLayout::Packed;
    let inf = inference_graph(&cfg, &ck.params, ck.dtype)
        .context("the model's parameters do not fit its config")?
        .to_bytes();
    let encoder = Encoder::from_bytes(opts, &inf)?;
    let scorer = if args.no_score {
        None
    } else {
        let bytes = score_graph(&cfg, &ck.params, ck.dtype)?.to_bytes();
        Some(session_from_bytes(opts, &bytes)?)
    };
    let catalog = Catalog::open(&args.data)?;
    let setup_s = started.elapsed().as_secs_f64();
    let mut emb = Embedder {
        cost: Cost::default(),
        encoder,
        scorer,
        layout: Layout::of(&cfg, ck.dtype),
        hidden: cfg.hidden,
    };
    let h = emb.hidden;
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let extra = vec![
        Field::new("bursts", DataType::UInt32, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(item.clone(), h as i32),
            false,
        ),
        Field::new("anomaly_score", DataType::Float32, true),
        Field::new("swap_score", DataType::Float32, false),
        Field::new("scored_tokens", DataType::UInt32, false),
    ];
    let footer = provenance(
        json!({"checkpoint": model.path, "step": ck.step, "config": cfg}),
        &catalog,
        vec![(
            "netfm.anomaly_score".into(),
            "mean masked-token loss (nats); burst k, field slot j masked when (j + k) % 3 == 0"
                .into(),
        )],
    )?;
    let mut writer = FlowWriter::create(&args.out, extra, footer)?;
    let bar = flows_bar(catalog.rows(), args.quiet);
    let mut summary = EmbedSummary {
        out: args.out.clone(),
        hidden: h,
        ..EmbedSummary::default()
    };
    let (mut score_sum, mut score_n) = (0.0f64, 0u64);
    let skipped = batches_of(&catalog.paths(), args.batch_size, &bar, |pending, file| {
        let refs: Vec<&TokenizedFlow> = pending.iter().map(|e| &e.flow).collect();
        let s = emb.run(&refs)?;
        let rows: Vec<RowId> = pending
            .iter()
            .map(|e| RowId {
                id: &e.id,
                protocol: e.flow.protocol,
                dataset_file: file,
            })
            .collect();
        let values = Float32Array::from(s.embedding);
        let list = FixedSizeListArray::try_new(item.clone(), h as i32, Arc::new(values), None)?;
        for x in s.score.iter().flatten() {
            score_sum += *x as f64;
            score_n += 1;
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(s.bursts)),
            Arc::new(list),
            Arc::new(Float32Array::from(s.score)),
            Arc::new(Float32Array::from(s.swap)),
            Arc::new(UInt32Array::from(s.scored)),
        ];
        writer.write(&rows, cols)
    })?;
    summary.flows_without_bursts = skipped.flows_without_bursts;
    summary.malformed_rows = skipped.malformed_rows;
    bar.finish_and_clear();
    summary.flows = writer.finish()?;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.setup_s = setup_s;
    summary.flows_per_s = summary.flows as f64 / (summary.elapsed_s - setup_s).max(1e-9);
    summary.mean_anomaly_score = if score_n > 0 {
        score_sum / score_n as f64
    } else {
        f64::NAN
    };
    summary.cost = emb.cost.clone();
    Ok(summary)
}

impl std::fmt::Display for EmbedSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "embed      {} flows in {:.1} s ({:.0} flows/s after {:.1} s of setup), {} dimensions",
            super::thousands(self.flows),
            self.elapsed_s,
            self.flows_per_s,
            self.setup_s,
            self.hidden
        )?;
        if self.flows_without_bursts + self.malformed_rows > 0 {
            writeln!(
                f,
                "skipped    {} flows without bursts, {} malformed rows",
                self.flows_without_bursts, self.malformed_rows
            )?;
        }
        writeln!(f, "anomaly    mean score {:.3}", self.mean_anomaly_score)?;
        writeln!(f, "output     {}", self.out.display())
    }
}
