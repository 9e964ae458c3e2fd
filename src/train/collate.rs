//! Flows to model batches: the input tensors every graph takes and the targets of the
//! pretraining and classification objectives, in either of the two input layouts
//! ([`InputLayout`]; netfm-models' `hier` module documents every input).
//!
//! A batch is first gathered into bursts (`Work`): each burst's tokens shifted into model ids
//! (netfm-tokenizer's vocabulary), cut to the model's `burst_len − 1` tokens and its flow to
//! `max_bursts` bursts (the cuts are counted). The corruptions are applied to that, then it is
//! laid out:
//! - dense: `input_ids[b, n, l]` is burst `n` of flow `b`, slot 0 its CLS token, then its
//!   tokens, then padding; padded to the batch's longest flow and longest burst;
//! - packed: the batch's bursts, CLS first, end to end into rows as long as the batch's
//!   longest burst (best fit, longest first), so the slots computed follow the real tokens.
//!
//! Burst metadata features: direction (+1 forward, −1 backward), ln(1+bytes), ln(1+packets),
//! ln(1+inter-arrival ms). The logarithms keep byte counts and gaps, which span six orders
//! of magnitude, in a range an MLP and a squared loss handle.
//!
//! Pretraining corruptions, in this order, from a seeded generator so runs repeat exactly
//! (the same draws in both layouts):
//! 1. swapped bursts: each burst is, with `swap_prob`, replaced by a random burst of another
//!    flow of the batch (label 1 in `swap_labels`);
//! 2. masked metadata: each burst's four features are, with `meta_mask_prob`, zeroed; the
//!    model regresses the last three (`meta_targets`) and predicts the direction
//!    (`direction_labels`) where `meta_weight` is 1;
//! 3. masked tokens (netFound's 30 %, 80/10/10): each field token is selected with
//!    `mlm_prob`; a selected token becomes MASK (80 %), a random field token (10 %) or stays
//!    (10 %); `mlm_index` holds the flat positions of the selected slots in `input_ids`,
//!    `mlm_labels` the original ids.
//!
//! The anomaly score's masking ([`score_batch`]) is fixed instead: in burst `k` of a flow,
//! the field token in slot `j` (1 = the first after CLS) is replaced by MASK when
//! `(j + k) % SCORE_MASK_PERIOD == 0`; no swaps, no masked metadata.
//!
//! For a netFound-architecture model ([`Layout::netfound`], set by [`Layout::of`] when the
//! config has `netfound`) the entry points build netFound's own batches instead
//! ([`super::netfound_batch`]: payload stripped, raw metadata, dense `[B, N, L]` with an
//! `attention_mask`, netFound's corruptions at its config's rates).

use super::netfound_batch::{
    netfound_classify_batch, netfound_inference_batch, netfound_pretrain_batch,
    netfound_score_batch, NetfoundLayout,
};
use netfm_models::config::{InputLayout, VocabSpec, META_FEATURES, META_TARGETS};
use netfm_models::params::SplitMix64;
use netfm_models::{DType, Data, ModelConfig, Tensor};
use netfm_tokenizer::{Burst, TokenizedFlow};
use std::collections::BTreeMap;

/// Every how many field token slots the anomaly score masks one (see the module docs).
pub const SCORE_MASK_PERIOD: usize = 3;

/// The shape a batch is laid out in: from the model's config.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub max_bursts: usize,
    pub burst_len: usize,
    pub vocab: VocabSpec,
    pub dtype: DType,
    pub input: InputLayout,
    /// Set for a netFound-architecture model (`cfg.netfound`): the entry points below then
    /// build netFound's batches instead ([`super::netfound_batch`]); the fields above are
    /// not used.
    pub netfound: Option<NetfoundLayout>,
}

impl Layout {
    pub fn of(cfg: &ModelConfig, dtype: DType) -> Layout {
        Layout {
            max_bursts: cfg.max_bursts,
            burst_len: cfg.burst_len,
            vocab: cfg.vocab.clone(),
            dtype,
            input: cfg.layout,
            netfound: NetfoundLayout::of(cfg, dtype),
        }
    }
}

/// Pretraining corruption rates.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Masking {
    pub mlm_prob: f64,
    pub mask_replace: f64,
    pub random_replace: f64,
    pub swap_prob: f64,
    pub meta_mask_prob: f64,
}

impl Default for Masking {
    fn default() -> Self {
        Masking {
            mlm_prob: 0.3,
            mask_replace: 0.8,
            random_replace: 0.1,
            swap_prob: 0.1,
            meta_mask_prob: 0.15,
        }
    }
}

/// Named tensors ready to feed a graph, and what went into them.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub tensors: Vec<(String, Tensor)>,
    pub flows: usize,
    /// Bursts placed (each has one CLS slot).
    pub bursts: usize,
    /// Field tokens placed (excluding CLS and padding).
    pub tokens: usize,
    /// Token slots computed: the size of `input_ids`.
    pub slots: usize,
    /// Field tokens cut because a burst was longer than `burst_len − 1`.
    pub cut_tokens: usize,
    /// Bursts cut because a flow had more than `max_bursts`.
    pub cut_bursts: usize,
    /// The flow (index into the batch) of each `mlm_index` entry.
    pub masked_flow: Vec<u32>,
    /// The slot inside its burst (1 = the first field token) of each `mlm_index` entry.
    pub masked_pos: Vec<u32>,
    /// Flows a netFound model cannot take ([`super::netfound_batch::netfound_unsupported`]),
    /// laid out as flows without bursts; always 0 for netfm's own models. Jobs filter such
    /// flows out before batching, so this stays 0 there.
    pub unsupported: usize,
}

impl Batch {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Real tokens: field tokens plus one CLS per burst.
    pub fn real_tokens(&self) -> usize {
        self.tokens + self.bursts
    }

    /// The batch's shape, for cost accounting: slots per row (burst) of `input_ids`, and the
    /// cells of the cross-burst attention grid (flows × most bursts).
    pub fn shape_stats(&self) -> (usize, usize) {
        let ids = self.get("input_ids").map_or(&[][..], |t| &t.dims[..]);
        let row_len = ids.last().copied().unwrap_or(0) as usize;
        let grid = match (self.get("flow_bursts"), ids.len()) {
            (Some(fb), _) => fb.dims.iter().product::<i64>() as usize,
            (None, 3) => (ids[0] * ids[1]) as usize,
            _ => 0,
        };
        (row_len, grid)
    }

    /// The tensors as JSON, `{name: {"dims", "dtype" (numpy's name), "values"}}`, for
    /// Python consumers (`np.array(values, dtype).reshape(dims)`).
    pub fn to_json(&self) -> serde_json::Value {
        let obj: serde_json::Map<String, serde_json::Value> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                let (dtype, values) = match &t.data {
                    Data::I64(v) => ("int64", serde_json::json!(v)),
                    Data::F32(v) => ("float32", serde_json::json!(v)),
                    Data::F64(v) => ("float64", serde_json::json!(v)),
                    Data::Bool(v) => ("bool", serde_json::json!(v)),
                };
                (
                    n.clone(),
                    serde_json::json!({"dims": t.dims, "dtype": dtype, "values": values}),
                )
            })
            .collect();
        serde_json::Value::Object(obj)
    }

    /// `(name, tensor)` pairs as [`crate::runtime::host::run`] takes them.
    pub fn feeds(&self) -> Vec<(&str, &Tensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect()
    }
}

/// One burst of a batch in the making.
#[derive(Clone)]
pub(super) struct WBurst {
    /// Field token ids (model ids; CLS not included).
    pub(super) ids: Vec<i64>,
    pub(super) meta: [f64; META_FEATURES],
}

/// A masked burst's metadata targets (ln(1+bytes), ln(1+packets), ln(1+iat ms)) and
/// whether it went forward.
type MetaTarget = ([f64; META_TARGETS], bool);

/// A batch before it is laid out: bursts per flow, and the per-burst targets.
pub(super) struct Work {
    pub(super) flows: Vec<Vec<WBurst>>,
    pub(super) protocol: Vec<i64>,
    /// Most bursts in one flow (≥ 1) and longest burst in slots (CLS included, ≥ 1),
    /// before corruption.
    pub(super) n: usize,
    pub(super) l: usize,
    pub(super) tokens: usize,
    pub(super) cut_tokens: usize,
    pub(super) cut_bursts: usize,
    /// Per burst (flow-major): swapped in, metadata target and direction when masked.
    swapped: Vec<Vec<bool>>,
    meta_target: Vec<Vec<Option<MetaTarget>>>,
    /// Selected tokens: (flow, burst, slot in the burst (≥ 1), original id).
    pub(super) masked: Vec<(usize, usize, usize, i64)>,
    /// See [`Batch::unsupported`].
    pub(super) unsupported: usize,
}

fn meta_features(forward: bool, bytes: u32, count: u32, iat_us: u64) -> [f64; META_FEATURES] {
    [
        if forward { 1.0 } else { -1.0 },
        (bytes as f64).ln_1p(),
        (count as f64).ln_1p(),
        (iat_us as f64 / 1000.0).ln_1p(),
    ]
}

impl Work {
    fn new(flows: &[&TokenizedFlow], lay: &Layout) -> Work {
        Work::build(
            flows,
            lay.max_bursts,
            lay.burst_len,
            lay.vocab.token_shift,
            |b: &Burst| meta_features(b.forward, b.bytes, b.count, b.iat_us),
        )
    }

    /// Each flow's first `max_bursts` bursts, each cut to `burst_len − 1` tokens shifted by
    /// `shift`, with `meta(burst)` as its features.
    pub(super) fn build(
        flows: &[&TokenizedFlow],
        max_bursts: usize,
        burst_len: usize,
        shift: u32,
        meta: impl Fn(&Burst) -> [f64; META_FEATURES],
    ) -> Work {
        let keep = burst_len.max(1) - 1;
        let mut w = Work {
            flows: Vec::with_capacity(flows.len()),
            protocol: Vec::with_capacity(flows.len()),
            n: 1,
            l: 1,
            tokens: 0,
            cut_tokens: 0,
            cut_bursts: 0,
            swapped: Vec::with_capacity(flows.len()),
            meta_target: Vec::with_capacity(flows.len()),
            masked: Vec::new(),
            unsupported: 0,
        };
        for flow in flows {
            w.protocol.push(flow.protocol as i64);
            w.cut_bursts += flow.bursts.len().saturating_sub(max_bursts);
            let bursts: Vec<WBurst> = flow
                .bursts_with_tokens()
                .take(max_bursts)
                .map(|(burst, tokens)| {
                    let k = tokens.len().min(keep);
                    w.tokens += k;
                    w.cut_tokens += tokens.len() - k;
                    w.l = w.l.max(k + 1);
                    WBurst {
                        ids: tokens[..k]
                            .iter()
                            .map(|&t| t as i64 + shift as i64)
                            .collect(),
                        meta: meta(burst),
                    }
                })
                .collect();
            w.n = w.n.max(bursts.len());
            w.swapped.push(vec![false; bursts.len()]);
            w.meta_target.push(vec![None; bursts.len()]);
            w.flows.push(bursts);
        }
        w
    }

    pub(super) fn bursts(&self) -> usize {
        self.flows.iter().map(Vec::len).sum()
    }

    /// 1. Swapped bursts.
    fn swap(&mut self, p: f64, rng: &mut SplitMix64) {
        let b = self.flows.len();
        if b < 2 {
            return;
        }
        let orig = self.flows.clone();
        for f in 0..b {
            for k in 0..orig[f].len() {
                if rng.uniform() >= p {
                    continue;
                }
                let other = (f + 1 + (rng.next_u64() % (b as u64 - 1)) as usize) % b;
                let choices = &orig[other];
                if choices.is_empty() {
                    continue;
                }
                let src = (rng.next_u64() % choices.len() as u64) as usize;
                self.flows[f][k] = choices[src].clone();
                self.swapped[f][k] = true;
            }
        }
    }

    /// 2. Masked metadata.
    fn mask_meta(&mut self, p: f64, rng: &mut SplitMix64) {
        for (f, bursts) in self.flows.iter_mut().enumerate() {
            for (k, burst) in bursts.iter_mut().enumerate() {
                if rng.uniform() >= p {
                    continue;
                }
                let m = &mut burst.meta;
                let mut target = [0.0; META_TARGETS];
                target.copy_from_slice(&m[1..]);
                self.meta_target[f][k] = Some((target, m[0] > 0.0));
                m.fill(0.0);
            }
        }
    }

    /// 3. Masked tokens.
    fn mask_tokens(&mut self, m: &Masking, lay: &Layout, rng: &mut SplitMix64) {
        let first = lay.vocab.token_shift as u64;
        let span = u16::MAX as u64 + 1;
        let mut first_token = None;
        for (f, bursts) in self.flows.iter_mut().enumerate() {
            for (k, burst) in bursts.iter_mut().enumerate() {
                for (j, id) in burst.ids.iter_mut().enumerate() {
                    first_token.get_or_insert((f, k, j + 1, *id));
                    if rng.uniform() >= m.mlm_prob {
                        continue;
                    }
                    self.masked.push((f, k, j + 1, *id));
                    let r = rng.uniform();
                    if r < m.mask_replace {
                        *id = lay.vocab.mask as i64;
                    } else if r < m.mask_replace + m.random_replace {
                        *id = (first + rng.next_u64() % span) as i64;
                    }
                }
            }
        }
        if self.masked.is_empty() {
            // Keep the masked-token loss defined on tiny batches: predict one unmasked token.
            self.masked.extend(first_token);
        }
    }

    /// The anomaly score's fixed masking (see the module docs), with `mask` as the MASK id.
    pub(super) fn mask_fixed(&mut self, mask: i64) {
        for (f, bursts) in self.flows.iter_mut().enumerate() {
            for (k, burst) in bursts.iter_mut().enumerate() {
                for (j, id) in burst.ids.iter_mut().enumerate() {
                    if (j + 1 + k) % SCORE_MASK_PERIOD == 0 {
                        self.masked.push((f, k, j + 1, *id));
                        *id = mask;
                    }
                }
            }
        }
    }
}

pub(super) fn float(dtype: DType, dims: Vec<i64>, v: Vec<f64>) -> Tensor {
    let data = match dtype {
        DType::F64 => Data::F64(v),
        _ => Data::F32(v.into_iter().map(|x| x as f32).collect()),
    };
    Tensor { dims, data }
}

pub(super) fn ints(dims: Vec<i64>, v: Vec<i64>) -> Tensor {
    Tensor {
        dims,
        data: Data::I64(v),
    }
}

/// Where each burst went: the flat slot of its CLS token; `slot(f, k) + j` is its slot `j`.
pub(super) struct Placed {
    pub(super) tensors: Vec<(String, Tensor)>,
    /// Per flow, per burst: the flat CLS slot.
    pub(super) cls_slot: Vec<Vec<usize>>,
    pub(super) slots: usize,
}

/// Dense: `[B, N, L]` (`input_ids`, `protocol`, `burst_meta` in `dtype`).
pub(super) fn lay_dense(w: &Work, vocab: &VocabSpec, dtype: DType) -> Placed {
    let (b, n, l) = (w.flows.len(), w.n, w.l);
    let mut ids = vec![vocab.pad as i64; b * n * l];
    let mut meta = vec![0.0; b * n * META_FEATURES];
    let mut cls_slot = Vec::with_capacity(b);
    for (f, bursts) in w.flows.iter().enumerate() {
        let mut slots = Vec::with_capacity(bursts.len());
        for (k, burst) in bursts.iter().enumerate() {
            let row = (f * n + k) * l;
            ids[row] = vocab.cls as i64;
            ids[row + 1..row + 1 + burst.ids.len()].copy_from_slice(&burst.ids);
            let at = (f * n + k) * META_FEATURES;
            meta[at..at + META_FEATURES].copy_from_slice(&burst.meta);
            slots.push(row);
        }
        cls_slot.push(slots);
    }
    let (bi, ni, li) = (b as i64, n as i64, l as i64);
    Placed {
        tensors: vec![
            ("input_ids".into(), ints(vec![bi, ni, li], ids)),
            ("protocol".into(), ints(vec![bi], w.protocol.clone())),
            (
                "burst_meta".into(),
                float(dtype, vec![bi, ni, META_FEATURES as i64], meta),
            ),
        ],
        cls_slot,
        slots: b * n * l,
    }
}

/// Rows for bursts of `sizes` slots each, `row_len` slots per row: best fit, longest first
/// (ties in burst order). Returns each burst's (row, offset) and the number of rows.
pub fn pack_rows(sizes: &[usize], row_len: usize) -> (Vec<(usize, usize)>, usize) {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), i));
    let mut fill: Vec<usize> = Vec::new();
    // Rows by free slots; the lowest row number first among equals.
    let mut free: BTreeMap<(usize, usize), ()> = BTreeMap::new();
    let mut at = vec![(0, 0); sizes.len()];
    for i in order {
        let need = sizes[i];
        let row = match free.range((need, 0)..).next().map(|(&k, _)| k) {
            Some(key) => {
                free.remove(&key);
                key.1
            }
            None => {
                fill.push(0);
                fill.len() - 1
            }
        };
        at[i] = (row, fill[row]);
        fill[row] += need;
        if fill[row] < row_len {
            free.insert((row_len - fill[row], row), ());
        }
    }
    (at, fill.len())
}

/// Packed: `[R, L]` rows (see netfm-models' `PackedInputs`).
fn lay_packed(w: &Work, lay: &Layout) -> Placed {
    let l = w.l;
    let sizes: Vec<usize> = w.flows.iter().flatten().map(|b| b.ids.len() + 1).collect();
    let (at, rows) = pack_rows(&sizes, l);
    let k_total = sizes.len();
    let mut ids = vec![lay.vocab.pad as i64; rows * l];
    let mut token_pos = vec![0i64; rows * l];
    let mut token_burst = vec![-1i64; rows * l];
    let mut meta = Vec::with_capacity(k_total * META_FEATURES);
    let mut burst_cls = Vec::with_capacity(k_total);
    let mut burst_flow = Vec::with_capacity(k_total);
    let mut burst_pos = Vec::with_capacity(k_total);
    let mut flow_bursts = vec![-1i64; w.flows.len() * w.n];
    let mut cls_slot = Vec::with_capacity(w.flows.len());
    let mut kb = 0usize;
    for (f, bursts) in w.flows.iter().enumerate() {
        let mut slots = Vec::with_capacity(bursts.len());
        for (k, burst) in bursts.iter().enumerate() {
            let (row, off) = at[kb];
            let s = row * l + off;
            ids[s] = lay.vocab.cls as i64;
            ids[s + 1..s + 1 + burst.ids.len()].copy_from_slice(&burst.ids);
            for j in 0..=burst.ids.len() {
                token_pos[s + j] = j as i64;
                token_burst[s + j] = kb as i64;
            }
            meta.extend_from_slice(&burst.meta);
            burst_cls.push(s as i64);
            burst_flow.push(f as i64);
            burst_pos.push(k as i64);
            flow_bursts[f * w.n + k] = kb as i64;
            slots.push(s);
            kb += 1;
        }
        cls_slot.push(slots);
    }
    // Padding slots belong to a burst of their row (the one before them).
    for row in token_burst.chunks_mut(l.max(1)) {
        let mut last = -1;
        for t in row {
            if *t >= 0 {
                last = *t;
            } else {
                *t = last;
            }
        }
    }
    let (ri, li, ki) = (rows as i64, l as i64, k_total as i64);
    Placed {
        tensors: vec![
            ("input_ids".into(), ints(vec![ri, li], ids)),
            ("token_pos".into(), ints(vec![ri, li], token_pos)),
            ("token_burst".into(), ints(vec![ri, li], token_burst)),
            (
                "burst_meta".into(),
                float(lay.dtype, vec![ki, META_FEATURES as i64], meta),
            ),
            ("burst_cls".into(), ints(vec![ki], burst_cls)),
            ("burst_flow".into(), ints(vec![ki], burst_flow)),
            ("burst_pos".into(), ints(vec![ki], burst_pos)),
            (
                "flow_bursts".into(),
                ints(vec![w.flows.len() as i64, w.n as i64], flow_bursts),
            ),
            (
                "protocol".into(),
                ints(vec![w.flows.len() as i64], w.protocol.clone()),
            ),
        ],
        cls_slot,
        slots: rows * l,
    }
}

fn place(w: &Work, lay: &Layout) -> Placed {
    match lay.input {
        InputLayout::Dense => lay_dense(w, &lay.vocab, lay.dtype),
        InputLayout::Packed => lay_packed(w, lay),
    }
}

/// Per-burst values in the layout's order and shape: `[B, N]` (zeros where no burst) dense,
/// `[K]` packed.
fn per_burst<const D: usize>(
    w: &Work,
    lay: &Layout,
    value: impl Fn(usize, usize) -> [f64; D],
) -> (Vec<i64>, Vec<f64>) {
    let tail = if D == 1 { vec![] } else { vec![D as i64] };
    match lay.input {
        InputLayout::Dense => {
            let (b, n) = (w.flows.len(), w.n);
            let mut v = vec![0.0; b * n * D];
            for (f, bursts) in w.flows.iter().enumerate() {
                for k in 0..bursts.len() {
                    let at = (f * n + k) * D;
                    v[at..at + D].copy_from_slice(&value(f, k));
                }
            }
            let mut dims = vec![b as i64, n as i64];
            dims.extend(tail);
            (dims, v)
        }
        InputLayout::Packed => {
            let mut v = Vec::with_capacity(w.bursts() * D);
            for (f, bursts) in w.flows.iter().enumerate() {
                for k in 0..bursts.len() {
                    v.extend_from_slice(&value(f, k));
                }
            }
            let mut dims = vec![w.bursts() as i64];
            dims.extend(tail);
            (dims, v)
        }
    }
}

pub(super) fn finish(w: &Work, placed: Placed, extra: Vec<(String, Tensor)>) -> Batch {
    let mut tensors = placed.tensors;
    tensors.extend(extra);
    Batch {
        tensors,
        flows: w.flows.len(),
        bursts: w.bursts(),
        tokens: w.tokens,
        slots: placed.slots,
        cut_tokens: w.cut_tokens,
        cut_bursts: w.cut_bursts,
        masked_flow: w.masked.iter().map(|m| m.0 as u32).collect(),
        masked_pos: w.masked.iter().map(|m| m.2 as u32).collect(),
        unsupported: w.unsupported,
    }
}

/// `mlm_index` (flat slots of the selected tokens) and `mlm_labels`.
pub(super) fn masked_tensors(w: &Work, placed: &Placed) -> Vec<(String, Tensor)> {
    let index: Vec<i64> = w
        .masked
        .iter()
        .map(|&(f, k, j, _)| (placed.cls_slot[f][k] + j) as i64)
        .collect();
    let labels: Vec<i64> = w.masked.iter().map(|m| m.3).collect();
    let t = index.len() as i64;
    vec![
        ("mlm_index".into(), ints(vec![t], index)),
        ("mlm_labels".into(), ints(vec![t], labels)),
    ]
}

/// The model inputs only (inference).
pub fn inference_batch(flows: &[&TokenizedFlow], lay: &Layout) -> Batch {
    if let Some(nf) = &lay.netfound {
        return netfound_inference_batch(flows, nf);
    }
    let w = Work::new(flows, lay);
    let placed = place(&w, lay);
    finish(&w, placed, Vec::new())
}

/// Inputs plus `class_labels` (−100 = no label) and `class_weight` (the loss weight of each
/// class) for the classification objective.
pub fn classify_batch(
    flows: &[&TokenizedFlow],
    labels: &[i64],
    class_weight: &[f64],
    lay: &Layout,
) -> Batch {
    if let Some(nf) = &lay.netfound {
        return netfound_classify_batch(flows, labels, class_weight, nf);
    }
    assert_eq!(flows.len(), labels.len(), "one label per flow");
    let w = Work::new(flows, lay);
    let placed = place(&w, lay);
    let n = labels.len() as i64;
    let c = class_weight.len() as i64;
    let extra = vec![
        ("class_labels".into(), ints(vec![n], labels.to_vec())),
        (
            "class_weight".into(),
            float(lay.dtype, vec![c], class_weight.to_vec()),
        ),
    ];
    finish(&w, placed, extra)
}

/// Inputs with the anomaly score's fixed masking, and `mlm_index`/`mlm_labels` (see the
/// module docs); `masked_flow` tells whose each masked token is.
pub fn score_batch(flows: &[&TokenizedFlow], lay: &Layout) -> Batch {
    if let Some(nf) = &lay.netfound {
        return netfound_score_batch(flows, nf);
    }
    let mut w = Work::new(flows, lay);
    w.mask_fixed(lay.vocab.mask as i64);
    let placed = place(&w, lay);
    let extra = masked_tensors(&w, &placed);
    finish(&w, placed, extra)
}

/// Inputs with the pretraining corruptions applied, and their targets.
///
/// For a netFound model (`lay.netfound`) these are netFound's corruptions at the rates of
/// its config (`swap_rate`, `mlm_probability`; [`super::netfound_batch`]): `masking` is
/// not used.
pub fn pretrain_batch(
    flows: &[&TokenizedFlow],
    lay: &Layout,
    masking: &Masking,
    rng: &mut SplitMix64,
) -> Batch {
    if let Some(nf) = &lay.netfound {
        return netfound_pretrain_batch(flows, nf, rng);
    }
    let mut w = Work::new(flows, lay);
    w.swap(masking.swap_prob, rng);
    w.mask_meta(masking.meta_mask_prob, rng);
    w.mask_tokens(masking, lay, rng);
    let placed = place(&w, lay);
    let mut extra = masked_tensors(&w, &placed);
    let dt = lay.dtype;
    let (dims, swap) = per_burst(&w, lay, |f, k| [w.swapped[f][k] as u8 as f64]);
    extra.push(("swap_labels".into(), float(dt, dims, swap)));
    let target = |f: usize, k: usize| w.meta_target[f][k];
    let (dims, v) = per_burst(&w, lay, |f, k| {
        target(f, k).map_or([0.0; META_TARGETS], |t| t.0)
    });
    extra.push(("meta_targets".into(), float(dt, dims, v)));
    let (dims, v) = per_burst(&w, lay, |f, k| [target(f, k).is_some() as u8 as f64]);
    extra.push(("meta_weight".into(), float(dt, dims, v)));
    let (dims, v) = per_burst(&w, lay, |f, k| {
        [target(f, k).is_some_and(|t| t.1) as u8 as f64]
    });
    extra.push(("direction_labels".into(), float(dt, dims, v)));
    finish(&w, placed, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(bursts: &[(usize, bool)]) -> TokenizedFlow {
        let mut f = TokenizedFlow {
            flow_duration_us: 10,
            protocol: 6,
            packets: bursts.len() as u64,
            ..TokenizedFlow::default()
        };
        for (i, &(len, forward)) in bursts.iter().enumerate() {
            let tokens: Vec<u16> = (0..len).map(|k| (100 * i + k) as u16).collect();
            let burst = Burst {
                token_len: 0,
                forward,
                bytes: 60 * len as u32,
                count: 1,
                iat_us: 1500,
                start_ns: 0,
            };
            f.push_burst(burst, &tokens);
        }
        f
    }

    fn layout() -> Layout {
        let mut cfg = ModelConfig::named("tiny").unwrap();
        cfg.max_bursts = 3;
        cfg.burst_len = 5;
        cfg.layout = InputLayout::Dense;
        Layout::of(&cfg, DType::F32)
    }

    fn packed() -> Layout {
        Layout {
            input: InputLayout::Packed,
            ..layout()
        }
    }

    fn ints_of<'a>(b: &'a Batch, name: &str) -> &'a [i64] {
        match &b.get(name).unwrap().data {
            Data::I64(v) => v,
            _ => panic!("{name} is not int64"),
        }
    }

    fn floats_of<'a>(b: &'a Batch, name: &str) -> &'a [f32] {
        match &b.get(name).unwrap().data {
            Data::F32(v) => v,
            _ => panic!("{name} is not float32"),
        }
    }

    #[test]
    fn best_fit_packing_fills_rows() {
        let (at, rows) = pack_rows(&[5, 2, 3, 5, 1, 4], 5);
        assert_eq!(rows, 4);
        // Longest first: the two 5s fill rows 0 and 1; 4 opens row 2 and the 1 joins it;
        // 3 opens row 3 and the 2 fills it.
        assert_eq!(at, vec![(0, 0), (3, 3), (3, 0), (1, 0), (2, 4), (2, 0)]);
        let (at, rows) = pack_rows(&[], 7);
        assert_eq!((at.len(), rows), (0, 0));
    }

    #[test]
    fn packed_layout_holds_the_same_bursts_in_fewer_slots() {
        let flows = [
            flow(&[(2, true), (4, false), (1, true), (1, false)]),
            flow(&[(1, true)]),
            flow(&[(3, false), (2, true)]),
        ];
        let refs: Vec<&TokenizedFlow> = flows.iter().collect();
        let d = inference_batch(&refs, &layout());
        let p = inference_batch(&refs, &packed());
        assert_eq!(
            (d.tokens, d.bursts, d.cut_bursts),
            (p.tokens, p.bursts, p.cut_bursts)
        );
        assert_eq!(p.bursts, 6);
        assert_eq!(d.slots, 3 * 3 * 5);
        assert!(p.slots < d.slots, "{} vs {}", p.slots, d.slots);
        assert!(p.slots >= p.real_tokens());
        let ids = ints_of(&p, "input_ids");
        let pos = ints_of(&p, "token_pos");
        let tb = ints_of(&p, "token_burst");
        let cls = ints_of(&p, "burst_cls");
        let bf = ints_of(&p, "burst_flow");
        let bp = ints_of(&p, "burst_pos");
        let fb = ints_of(&p, "flow_bursts");
        assert_eq!(p.get("flow_bursts").unwrap().dims, vec![3, 3]);
        assert_eq!(fb, &[0, 1, 2, 3, -1, -1, 4, 5, -1]);
        assert_eq!(bf, &[0, 0, 0, 1, 2, 2]);
        assert_eq!(bp, &[0, 1, 2, 0, 0, 1]);
        // Every burst: CLS at its slot, then its tokens in order, in the dense grid's order.
        let dense_ids = ints_of(&d, "input_ids");
        for k in 0..p.bursts {
            let (f, n) = (bf[k] as usize, bp[k] as usize);
            let s = cls[k] as usize;
            let row = (f * 3 + n) * 5;
            assert_eq!(ids[s], layout().vocab.cls as i64);
            let mut j = 0;
            while j < 5 && dense_ids[row + j] != 0 {
                assert_eq!(ids[s + j], dense_ids[row + j], "burst {k} slot {j}");
                assert_eq!((pos[s + j], tb[s + j]), (j as i64, k as i64));
                j += 1;
            }
        }
        // Padding slots point at a burst of their own row.
        let l = p.get("input_ids").unwrap().dims[1] as usize;
        for (s, &t) in tb.iter().enumerate() {
            assert!(t >= 0 && cls[t as usize] as usize / l == s / l);
        }
        let dm = floats_of(&d, "burst_meta");
        let pm = floats_of(&p, "burst_meta");
        for k in 0..p.bursts {
            let at = (bf[k] as usize * 3 + bp[k] as usize) * 4;
            assert_eq!(&pm[k * 4..k * 4 + 4], &dm[at..at + 4]);
        }
    }

    #[test]
    fn both_layouts_draw_the_same_corruptions() {
        let flows: Vec<TokenizedFlow> = (0..5)
            .map(|i| flow(&[(4, true), (1 + i % 3, false), (2, true)][..1 + i % 3]))
            .collect();
        let refs: Vec<&TokenizedFlow> = flows.iter().collect();
        let masking = Masking {
            swap_prob: 0.3,
            meta_mask_prob: 0.3,
            ..Default::default()
        };
        let d = pretrain_batch(&refs, &layout(), &masking, &mut SplitMix64(3));
        let p = pretrain_batch(&refs, &packed(), &masking, &mut SplitMix64(3));
        assert_eq!(ints_of(&d, "mlm_labels"), ints_of(&p, "mlm_labels"));
        assert_eq!(d.masked_flow, p.masked_flow);
        let (dids, pids) = (ints_of(&d, "input_ids"), ints_of(&p, "input_ids"));
        for (a, b) in ints_of(&d, "mlm_index")
            .iter()
            .zip(ints_of(&p, "mlm_index"))
        {
            assert_eq!(dids[*a as usize], pids[*b as usize]);
        }
        let bf = ints_of(&p, "burst_flow");
        let bp = ints_of(&p, "burst_pos");
        for name in ["swap_labels", "meta_weight", "direction_labels"] {
            let (dv, pv) = (floats_of(&d, name), floats_of(&p, name));
            for k in 0..p.bursts {
                assert_eq!(pv[k], dv[bf[k] as usize * 3 + bp[k] as usize], "{name} {k}");
            }
        }
        assert!(floats_of(&p, "swap_labels").contains(&1.0));
        assert_eq!(
            p.get("meta_targets").unwrap().dims,
            vec![p.bursts as i64, 3]
        );
    }

    #[test]
    fn score_masking_is_fixed() {
        let f = flow(&[(4, true), (3, false)]);
        let b = score_batch(&[&f], &packed());
        let mask = packed().vocab.mask as i64;
        let ids = ints_of(&b, "input_ids");
        let index = ints_of(&b, "mlm_index");
        // Burst 0: slots 3 (j + 0 ≡ 0 mod 3); burst 1: slots 2 (j + 1 ≡ 0 mod 3).
        assert_eq!(index.len(), 2);
        assert!(index.iter().all(|&i| ids[i as usize] == mask));
        assert_eq!(ints_of(&b, "mlm_labels"), &[3, 102]);
        assert_eq!(b.masked_flow, vec![0, 0]);
        assert_eq!(score_batch(&[&f], &packed()), b);
    }

    #[test]
    fn lays_out_cls_tokens_padding_and_cuts() {
        let lay = layout();
        let f = flow(&[(2, true), (6, false), (1, true), (1, false)]);
        let b = inference_batch(&[&f], &lay);
        let Data::I64(ids) = &b.get("input_ids").unwrap().data else {
            panic!()
        };
        let cls = lay.vocab.cls as i64;
        assert_eq!(&ids[0..5], &[cls, 1, 2, 0, 0]);
        assert_eq!(&ids[5..10], &[cls, 101, 102, 103, 104]);
        assert_eq!(&ids[10..15], &[cls, 201, 0, 0, 0]);
        assert_eq!((b.tokens, b.cut_tokens, b.cut_bursts), (7, 2, 1));
        let Data::F32(meta) = &b.get("burst_meta").unwrap().data else {
            panic!()
        };
        assert_eq!(meta[0], 1.0);
        assert_eq!(meta[4], -1.0);
        assert!((meta[1] - (120f32).ln_1p()).abs() < 1e-6);
        assert!((meta[3] - (1.5f32).ln_1p()).abs() < 1e-6);
    }

    #[test]
    fn pretraining_targets_are_consistent_and_seeded() {
        let lay = layout();
        let flows: Vec<TokenizedFlow> = (0..6)
            .map(|i| flow(&[(4, true), (3 + i % 2, false), (2, true)]))
            .collect();
        let refs: Vec<&TokenizedFlow> = flows.iter().collect();
        let masking = Masking {
            swap_prob: 0.3,
            meta_mask_prob: 0.3,
            ..Default::default()
        };
        let a = pretrain_batch(&refs, &lay, &masking, &mut SplitMix64(7));
        let b = pretrain_batch(&refs, &lay, &masking, &mut SplitMix64(7));
        assert_eq!(a, b, "same seed, same batch");
        let plain = inference_batch(&refs, &lay);
        let Data::I64(ids) = &a.get("input_ids").unwrap().data else {
            panic!()
        };
        let Data::I64(orig) = &plain.get("input_ids").unwrap().data else {
            panic!()
        };
        let Data::I64(index) = &a.get("mlm_index").unwrap().data else {
            panic!()
        };
        let Data::I64(labels) = &a.get("mlm_labels").unwrap().data else {
            panic!()
        };
        let Data::F32(swap) = &a.get("swap_labels").unwrap().data else {
            panic!()
        };
        assert!(!index.is_empty());
        let mask = lay.vocab.mask as i64;
        let mut masked = 0;
        for (&at, &label) in index.iter().zip(labels) {
            let at = at as usize;
            let l = a.get("input_ids").unwrap().dims[2] as usize;
            assert!(!at.is_multiple_of(l), "never the CLS slot");
            if swap[at / l] == 0.0 {
                assert_eq!(label, orig[at], "label is the original token");
            }
            masked += (ids[at] == mask) as usize;
        }
        assert!(masked * 2 > index.len(), "most selected tokens become MASK");
        assert!(swap.contains(&1.0), "some bursts swapped at 30%");
        // Masked metadata is zeroed in the input and kept as a target.
        let Data::F32(w) = &a.get("meta_weight").unwrap().data else {
            panic!()
        };
        let Data::F32(meta) = &a.get("burst_meta").unwrap().data else {
            panic!()
        };
        let Data::F32(targets) = &a.get("meta_targets").unwrap().data else {
            panic!()
        };
        let s = w
            .iter()
            .position(|&x| x == 1.0)
            .expect("some metadata masked");
        assert!(meta[s * 4..s * 4 + 4].iter().all(|&x| x == 0.0));
        assert!(targets[s * 3] > 0.0);
    }
}
