//! From one model definition ([`crate::hier`]) to the three graphs netfm runs:
//!
//! - `inference`: parameters baked in as initializers; inputs the batch; outputs the flow and
//!   burst embeddings and every head's output.
//! - `train_step`: inputs the batch, the targets of the objective, every parameter `P`, its
//!   AdamW moments `m.P` and `v.P`, `step`, `lr`, `warmup_steps`, `total_steps`; outputs the
//!   loss terms, `grad_norm`, the step's `lr_used`, and `new.P`, `new.m.P`, `new.v.P` with the
//!   same shapes as their inputs (so the runtime can swap two buffer sets).
//! - `eval`: the train step's inputs minus the optimizer's; outputs the loss terms and the
//!   head outputs, no update.
//!
//! Each model records in `metadata_props` its kind, its [`ModelConfig`], the objective, the
//! vocabulary it expects and (train/eval) the ordered parameter list.

use crate::autodiff::gradients;
use crate::config::{ModelConfig, META_TARGETS};
use crate::graph::{DType, Dim, Graph, Tensor, V};
use crate::hier::{
    bce_with_logits, cross_entropy, token_nll, weighted_cross_entropy, weighted_mean, BatchInputs,
    HeadOutputs, Model,
};
use crate::optim::{adamw, AdamWConfig, ParamSlot, StepInputs};
use crate::params::{InitializerParams, InputParams, ParamSpec, PartlyFrozen};
use crate::proto::ModelProto;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use thiserror::Error;

/// Weights of netFound's pretraining objectives in the total loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainWeights {
    pub mlm: f64,
    pub swap: f64,
    pub meta: f64,
    pub direction: f64,
}

impl Default for PretrainWeights {
    fn default() -> Self {
        PretrainWeights {
            mlm: 1.0,
            swap: 1.0,
            meta: 1.0,
            direction: 1.0,
        }
    }
}

/// What a train step optimises.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Objective {
    /// Masked tokens, swapped bursts, masked burst metadata, burst direction.
    Pretrain(PretrainWeights),
    /// Flow classification (needs `num_classes > 0`): cross-entropy weighted per class by
    /// the `class_weight: [C]` input (all ones for an unweighted mean).
    Classify,
}

impl Objective {
    /// Names of the loss outputs, total first.
    pub fn loss_names(&self) -> Vec<&'static str> {
        match self {
            Objective::Pretrain(_) => vec![
                "loss",
                "loss_mlm",
                "loss_swap",
                "loss_meta",
                "loss_direction",
            ],
            Objective::Classify => vec!["loss", "loss_class"],
        }
    }
}

/// Everything that shapes a train-step graph besides the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    pub objective: Objective,
    pub adamw: AdamWConfig,
    pub dtype: DType,
}

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("invalid model config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("the classification objective needs num_classes > 0")]
    NoClasses,
    #[error("parameters missing: {0:?}")]
    Missing(Vec<String>),
    #[error("parameters with the wrong shape or dtype (name, expected, found): {0:?}")]
    WrongShape(Vec<(String, Vec<i64>, Vec<i64>)>),
}

/// Keys of `metadata_props`.
pub mod meta_keys {
    pub const KIND: &str = "netfm.kind";
    pub const CONFIG: &str = "netfm.config";
    pub const VOCAB: &str = "netfm.vocab";
    pub const OBJECTIVE: &str = "netfm.objective";
    pub const PARAMS: &str = "netfm.params";
    pub const DTYPE: &str = "netfm.dtype";
    /// Which model definition built the graph: absent for the hierarchical encoder,
    /// `forecaster` for [`crate::forecaster`].
    pub const ARCHITECTURE: &str = "netfm.architecture";
    /// The forecaster's [`crate::forecaster::ForecastConfig`] JSON.
    pub const FORECAST_CONFIG: &str = "netfm.forecast_config";
}

/// The parameters of `cfg` in graph order (built into a scratch graph).
pub fn param_specs(cfg: &ModelConfig) -> Result<Vec<ParamSpec>, ExportError> {
    cfg.validate()?;
    let mut g = Graph::new(DType::F32);
    let mut store = InputParams::default();
    let inp = BatchInputs::declare(&mut g, cfg);
    let mut model = Model {
        cfg,
        store: &mut store,
    };
    let enc = model.encode(&mut g, &inp);
    model.heads(&mut g, &enc);
    let idx = g.input("mlm_index", DType::I64, vec![Dim::sym("masked")]);
    model.mlm_logits(&mut g, &enc, idx);
    Ok(store.specs)
}

/// The parameter list as recorded in a model: name and dims.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamEntry {
    pub name: String,
    pub dims: Vec<i64>,
}

fn metadata(
    kind: &str,
    cfg: &ModelConfig,
    objective: Option<&Objective>,
    params: Option<&[ParamSpec]>,
    dtype: DType,
) -> Vec<(String, String)> {
    let mut m = vec![
        (meta_keys::KIND.to_string(), kind.to_string()),
        (meta_keys::CONFIG.to_string(), cfg.to_json()),
        (
            meta_keys::VOCAB.to_string(),
            serde_json::to_string(&cfg.vocab).expect("vocab"),
        ),
        (
            meta_keys::DTYPE.to_string(),
            serde_json::to_string(&dtype).expect("dtype"),
        ),
    ];
    if let Some(o) = objective {
        m.push((
            meta_keys::OBJECTIVE.to_string(),
            serde_json::to_string(o).expect("objective"),
        ));
    }
    if let Some(ps) = params {
        m.push((meta_keys::PARAMS.to_string(), param_entries_json(ps)));
    }
    m
}

/// The value of `netfm.params`: the ordered [`ParamEntry`] list of `params`.
pub fn param_entries_json(params: &[ParamSpec]) -> String {
    let entries: Vec<ParamEntry> = params
        .iter()
        .map(|p| ParamEntry {
            name: p.name.clone(),
            dims: p.dims.clone(),
        })
        .collect();
    serde_json::to_string(&entries).expect("params")
}

fn output_heads(g: &mut Graph, heads: &HeadOutputs) {
    g.output(heads.swap_logits, "swap_logits");
    g.output(heads.direction_logits, "direction_logits");
    g.output(heads.meta_pred, "meta_pred");
    if let Some(c) = heads.class_logits {
        g.output(c, "class_logits");
    }
}

/// Every baked-in parameter was found with its shape.
fn baked(store: InitializerParams) -> Result<(), ExportError> {
    if !store.missing.is_empty() {
        return Err(ExportError::Missing(store.missing));
    }
    if !store.wrong_shape.is_empty() {
        return Err(ExportError::WrongShape(store.wrong_shape));
    }
    Ok(())
}

/// The inference graph with `params` baked in.
pub fn inference_graph(
    cfg: &ModelConfig,
    params: &HashMap<String, Tensor>,
    dtype: DType,
) -> Result<ModelProto, ExportError> {
    cfg.validate()?;
    let mut g = Graph::new(dtype);
    let inp = BatchInputs::declare(&mut g, cfg);
    let mut store = InitializerParams::new(params);
    let mut model = Model {
        cfg,
        store: &mut store,
    };
    let enc = model.encode(&mut g, &inp);
    let heads = model.heads(&mut g, &enc);
    baked(store)?;
    g.output(enc.flow, "embedding");
    g.output(enc.bursts, "burst_embeddings");
    output_heads(&mut g, &heads);
    Ok(g.to_model(
        "netfm_inference",
        &metadata("inference", cfg, None, None, dtype),
    ))
}

/// The anomaly-score graph with `params` baked in: the batch inputs (with some tokens
/// masked) plus `mlm_index: [T]` and `mlm_labels: [T]`; outputs `token_loss: [T]`, the
/// negative log-likelihood of each masked position's true id.
pub fn score_graph(
    cfg: &ModelConfig,
    params: &HashMap<String, Tensor>,
    dtype: DType,
) -> Result<ModelProto, ExportError> {
    cfg.validate()?;
    let mut g = Graph::new(dtype);
    let inp = BatchInputs::declare(&mut g, cfg);
    let index = g.input("mlm_index", DType::I64, vec![Dim::sym("masked")]);
    let labels = g.input("mlm_labels", DType::I64, vec![Dim::sym("masked")]);
    let mut store = InitializerParams::new(params);
    let mut model = Model {
        cfg,
        store: &mut store,
    };
    let enc = model.encode(&mut g, &inp);
    let logits = model.mlm_logits(&mut g, &enc, index);
    baked(store)?;
    let nll = token_nll(&mut g, logits, labels);
    g.output(nll, "token_loss");
    Ok(g.to_model("netfm_score", &metadata("score", cfg, None, None, dtype)))
}

/// Targets of the pretraining objectives (inputs of train-step and eval graphs).
struct PretrainTargets {
    mlm_index: V,
    mlm_labels: V,
    swap_labels: V,
    meta_targets: V,
    meta_weight: V,
    direction_labels: V,
}

/// Loss outputs and their names, the total first.
type LossTerms = Vec<(V, &'static str)>;

/// What the forward pass with losses built: the loss terms, the heads, and (pretraining)
/// the masked-token logits `[T, vocab]`.
struct Forward {
    terms: LossTerms,
    heads: HeadOutputs,
    mlm_logits: Option<V>,
}

/// Builds forward and losses.
fn forward_with_losses(
    g: &mut Graph,
    cfg: &ModelConfig,
    objective: &Objective,
    store: &mut PartlyFrozen,
) -> Result<Forward, ExportError> {
    if matches!(objective, Objective::Classify) && cfg.num_classes == 0 {
        return Err(ExportError::NoClasses);
    }
    let f = g.float;
    let b = Dim::sym("batch");
    let inp = BatchInputs::declare(g, cfg);
    let per_burst = inp.burst_dims();
    let mut with_meta = per_burst.clone();
    with_meta.push(Dim::fixed(META_TARGETS as i64));
    let targets = match objective {
        Objective::Pretrain(_) => Some(PretrainTargets {
            mlm_index: g.input("mlm_index", DType::I64, vec![Dim::sym("masked")]),
            mlm_labels: g.input("mlm_labels", DType::I64, vec![Dim::sym("masked")]),
            swap_labels: g.input("swap_labels", f, per_burst.clone()),
            meta_targets: g.input("meta_targets", f, with_meta),
            meta_weight: g.input("meta_weight", f, per_burst.clone()),
            direction_labels: g.input("direction_labels", f, per_burst),
        }),
        Objective::Classify => None,
    };
    let class_labels = matches!(objective, Objective::Classify).then(|| {
        let c = Dim::fixed(cfg.num_classes as i64);
        (
            g.input("class_labels", DType::I64, vec![b]),
            g.input("class_weight", f, vec![c]),
        )
    });

    let mut model = Model { cfg, store };
    let enc = model.encode(g, &inp);
    let heads = model.heads(g, &enc);
    let mut terms = Vec::new();
    let mut mlm_logits = None;
    match objective {
        Objective::Pretrain(w) => {
            let t = targets.expect("pretrain targets");
            let logits = model.mlm_logits(g, &enc, t.mlm_index);
            mlm_logits = Some(logits);
            let mlm = cross_entropy(g, logits, t.mlm_labels);
            // Swapped-burst detection over every present burst.
            let swap_el = bce_with_logits(g, heads.swap_logits, t.swap_labels);
            let swap = weighted_mean(g, swap_el, enc.burst_present, 1.0);
            // Metadata regression and direction prediction on the masked bursts.
            let diff = g.sub(heads.meta_pred, t.meta_targets);
            let sq = g.mul(diff, diff);
            let sq = g.reduce_mean(sq, &[-1], false);
            let meta = weighted_mean(g, sq, t.meta_weight, 1.0);
            let dir_el = bce_with_logits(g, heads.direction_logits, t.direction_labels);
            let dir = weighted_mean(g, dir_el, t.meta_weight, 1.0);
            let mut total = g.mul_scalar(mlm, w.mlm);
            for (term, wt) in [(swap, w.swap), (meta, w.meta), (dir, w.direction)] {
                let s = g.mul_scalar(term, wt);
                total = g.add(total, s);
            }
            terms.extend([
                (total, "loss"),
                (mlm, "loss_mlm"),
                (swap, "loss_swap"),
                (meta, "loss_meta"),
                (dir, "loss_direction"),
            ]);
        }
        Objective::Classify => {
            let logits = heads.class_logits.ok_or(ExportError::NoClasses)?;
            let (labels, weight) = class_labels.expect("labels");
            let ce = weighted_cross_entropy(g, logits, labels, weight);
            let total = g.identity(ce);
            terms.extend([(total, "loss"), (ce, "loss_class")]);
        }
    }
    Ok(Forward {
        terms,
        heads,
        mlm_logits,
    })
}

/// The eval graph: loss terms and head outputs with parameters as inputs; when
/// pretraining also `mlm_pred`, the most likely id at each masked position.
pub fn eval_graph(cfg: &ModelConfig, spec: &TrainSpec) -> Result<ModelProto, ExportError> {
    eval_graph_frozen(cfg, spec, &HashMap::new())
}

/// [`eval_graph`] with the parameters of `frozen` baked in (the others are inputs).
pub fn eval_graph_frozen(
    cfg: &ModelConfig,
    spec: &TrainSpec,
    frozen: &HashMap<String, Tensor>,
) -> Result<ModelProto, ExportError> {
    cfg.validate()?;
    let mut g = Graph::new(spec.dtype);
    let mut mixed = PartlyFrozen::new(frozen);
    let fwd = forward_with_losses(&mut g, cfg, &spec.objective, &mut mixed)?;
    let store = checked(mixed)?;
    for (v, name) in fwd.terms {
        g.output(v, name);
    }
    output_heads(&mut g, &fwd.heads);
    if let Some(logits) = fwd.mlm_logits {
        let pred = g.argmax(logits, -1);
        g.output(pred, "mlm_pred");
    }
    let meta = metadata(
        "eval",
        cfg,
        Some(&spec.objective),
        Some(&store.specs),
        spec.dtype,
    );
    Ok(g.to_model("netfm_eval", &meta))
}

/// Loss terms and the gradient `grad.P` of the total loss for every parameter `P`, with
/// parameters as inputs (the train step without its update; gradient checks use it).
pub fn gradient_graph(cfg: &ModelConfig, spec: &TrainSpec) -> Result<ModelProto, ExportError> {
    cfg.validate()?;
    let mut g = Graph::new(spec.dtype);
    let empty = HashMap::new();
    let mut mixed = PartlyFrozen::new(&empty);
    let terms = forward_with_losses(&mut g, cfg, &spec.objective, &mut mixed)?.terms;
    let store = checked(mixed)?;
    let grads = gradients(&mut g, terms[0].0, &store.values);
    for (v, name) in terms {
        g.output(v, name);
    }
    for (s, gr) in store.specs.iter().zip(grads) {
        g.output(gr, &format!("grad.{}", s.name));
    }
    let meta = metadata(
        "gradient",
        cfg,
        Some(&spec.objective),
        Some(&store.specs),
        spec.dtype,
    );
    Ok(g.to_model("netfm_gradient", &meta))
}

/// The train-step graph: forward, gradients, AdamW.
pub fn train_step_graph(cfg: &ModelConfig, spec: &TrainSpec) -> Result<ModelProto, ExportError> {
    Ok(build_train_step(cfg, spec)?.to_model_with_meta())
}

/// The train-step graph with the parameters of `frozen` baked in: only the others are
/// inputs, get gradients and are updated (fine-tuning a head on a frozen encoder).
pub fn train_step_graph_frozen(
    cfg: &ModelConfig,
    spec: &TrainSpec,
    frozen: &HashMap<String, Tensor>,
) -> Result<ModelProto, ExportError> {
    Ok(build_train_step_frozen(cfg, spec, frozen)?.to_model_with_meta())
}

/// The trainable parameters of a built graph, once every frozen one was found.
fn checked(mixed: PartlyFrozen) -> Result<InputParams, ExportError> {
    if !mixed.unfit.is_empty() {
        return Err(ExportError::Missing(mixed.unfit));
    }
    Ok(mixed.trainable)
}

/// A built train-step graph, before emission (tests inspect it).
pub struct TrainStepGraph {
    pub graph: Graph,
    pub params: Vec<ParamSpec>,
    meta: Vec<(String, String)>,
}

impl TrainStepGraph {
    pub fn to_model_with_meta(&self) -> ModelProto {
        self.graph.to_model("netfm_train_step", &self.meta)
    }
}

pub fn build_train_step(
    cfg: &ModelConfig,
    spec: &TrainSpec,
) -> Result<TrainStepGraph, ExportError> {
    build_train_step_frozen(cfg, spec, &HashMap::new())
}

fn build_train_step_frozen(
    cfg: &ModelConfig,
    spec: &TrainSpec,
    frozen: &HashMap<String, Tensor>,
) -> Result<TrainStepGraph, ExportError> {
    cfg.validate()?;
    let mut g = Graph::new(spec.dtype);
    let mut mixed = PartlyFrozen::new(frozen);
    let terms = forward_with_losses(&mut g, cfg, &spec.objective, &mut mixed)?.terms;
    let store = checked(mixed)?;
    append_train_step(&mut g, &spec.adamw, &store, &terms);
    let meta = metadata(
        "train_step",
        cfg,
        Some(&spec.objective),
        Some(&store.specs),
        spec.dtype,
    );
    Ok(TrainStepGraph {
        graph: g,
        params: store.specs,
        meta,
    })
}

/// Appends a train step to a graph whose parameters are the inputs of `store`: the
/// gradients of the total loss `terms[0]`, the inputs `m.P`, `v.P` and the step scalars, one
/// AdamW update, and the outputs `terms` (loss names), `grad_norm`, `lr_used`, `new.P`,
/// `new.m.P`, `new.v.P` (the contract netfm's `Trainer` runs).
pub fn append_train_step(
    g: &mut Graph,
    cfg: &AdamWConfig,
    store: &InputParams,
    terms: &[(V, &str)],
) {
    let grads = gradients(g, terms[0].0, &store.values);
    let f = g.float;
    let slots: Vec<ParamSlot> = store
        .specs
        .iter()
        .zip(&store.values)
        .map(|(s, &p)| {
            let dims = crate::graph::fixed(&s.dims);
            ParamSlot {
                param: p,
                m: g.input(&format!("m.{}", s.name), f, dims.clone()),
                v: g.input(&format!("v.{}", s.name), f, dims),
                decay: s.decay,
            }
        })
        .collect();
    let io = StepInputs::declare(g);
    let upd = adamw(g, cfg, &slots, &grads, &io);
    for &(v, name) in terms {
        g.output(v, name);
    }
    g.output(upd.grad_norm, "grad_norm");
    g.output(upd.lr, "lr_used");
    for (i, s) in store.specs.iter().enumerate() {
        g.output(upd.params[i], &format!("new.{}", s.name));
        g.output(upd.m[i], &format!("new.m.{}", s.name));
        g.output(upd.v[i], &format!("new.v.{}", s.name));
    }
}
