//! Flows to model batches: the input tensors every graph takes (`input_ids`, `protocol`,
//! `burst_meta`) and the targets of the pretraining and classification objectives.
//!
//! Layout: `input_ids[b, n, l]` is burst `n` of flow `b`; slot 0 is the burst's CLS token,
//! then the burst's raw tokens shifted into model ids (netfm-tokenizer's vocabulary), then
//! padding. A batch is padded only to its own longest flow (bursts) and longest burst
//! (tokens + 1); tokens past the model's `burst_len − 1` and bursts past its `max_bursts` are
//! cut and counted.
//!
//! Burst metadata features: direction (+1 forward, −1 backward), ln(1+bytes), ln(1+packets),
//! ln(1+inter-arrival ms). The logarithms keep byte counts and gaps, which span six orders
//! of magnitude, in a range an MLP and a squared loss handle.
//!
//! Pretraining corruptions, in this order, from a seeded generator so runs repeat exactly:
//! 1. swapped bursts: each present burst is, with `swap_prob`, replaced by a random present
//!    burst of another flow of the batch (label 1 in `swap_labels`);
//! 2. masked metadata: each present burst's four features are, with `meta_mask_prob`, zeroed;
//!    the model regresses the last three (`meta_targets`) and predicts the direction
//!    (`direction_labels`) where `meta_weight` is 1;
//! 3. masked tokens (netFound's 30 %, 80/10/10): each field token is selected with
//!    `mlm_prob`; a selected token becomes MASK (80 %), a random field token (10 %) or stays
//!    (10 %); `mlm_index` holds the flat positions `(b·N + n)·L + l`, `mlm_labels` the
//!    original ids.

use netfm_models::config::{VocabSpec, META_FEATURES, META_TARGETS};
use netfm_models::params::SplitMix64;
use netfm_models::{DType, Data, ModelConfig, Tensor};
use netfm_tokenizer::TokenizedFlow;

/// The shape a batch is laid out in: from the model's config.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub max_bursts: usize,
    pub burst_len: usize,
    pub vocab: VocabSpec,
    pub dtype: DType,
}

impl Layout {
    pub fn of(cfg: &ModelConfig, dtype: DType) -> Layout {
        Layout {
            max_bursts: cfg.max_bursts,
            burst_len: cfg.burst_len,
            vocab: cfg.vocab.clone(),
            dtype,
        }
    }
}

/// Pretraining corruption rates.
#[derive(Clone, Debug, PartialEq)]
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
    /// Field tokens placed (excluding CLS and padding).
    pub tokens: usize,
    /// Field tokens cut because a burst was longer than `burst_len − 1`.
    pub cut_tokens: usize,
    /// Bursts cut because a flow had more than `max_bursts`.
    pub cut_bursts: usize,
}

impl Batch {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
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

/// The encoded inputs before they become tensors.
struct Encoded {
    ids: Vec<i64>,
    protocol: Vec<i64>,
    meta: Vec<f64>,
    present: Vec<bool>,
    tokens: usize,
    cut_tokens: usize,
    cut_bursts: usize,
    /// Bursts per flow and tokens per burst of this batch.
    n: usize,
    l: usize,
}

fn meta_features(forward: bool, bytes: u32, count: u32, iat_us: u64) -> [f64; META_FEATURES] {
    [
        if forward { 1.0 } else { -1.0 },
        (bytes as f64).ln_1p(),
        (count as f64).ln_1p(),
        (iat_us as f64 / 1000.0).ln_1p(),
    ]
}

fn encode(flows: &[&TokenizedFlow], lay: &Layout) -> Encoded {
    // Pad to this batch's longest flow and burst, capped by the model's sizes.
    let most_bursts = flows.iter().map(|f| f.bursts.len()).max().unwrap_or(0);
    let longest = flows
        .iter()
        .flat_map(|f| &f.bursts)
        .map(|b| b.token_len as usize)
        .max()
        .unwrap_or(0);
    let n = most_bursts.clamp(1, lay.max_bursts);
    let l = (longest + 1).clamp(1, lay.burst_len);
    let b = flows.len();
    let mut e = Encoded {
        ids: vec![lay.vocab.pad as i64; b * n * l],
        protocol: Vec::with_capacity(b),
        meta: vec![0.0; b * n * META_FEATURES],
        present: vec![false; b * n],
        tokens: 0,
        cut_tokens: 0,
        cut_bursts: 0,
        n,
        l,
    };
    for (fi, flow) in flows.iter().enumerate() {
        e.protocol.push(flow.protocol as i64);
        e.cut_bursts += flow.bursts.len().saturating_sub(n);
        for (bi, (burst, tokens)) in flow.bursts_with_tokens().take(n).enumerate() {
            let row = (fi * n + bi) * l;
            e.ids[row] = lay.vocab.cls as i64;
            let keep = tokens.len().min(l - 1);
            for (k, &t) in tokens[..keep].iter().enumerate() {
                e.ids[row + 1 + k] = t as i64 + lay.vocab.token_shift as i64;
            }
            e.tokens += keep;
            e.cut_tokens += tokens.len() - keep;
            e.present[fi * n + bi] = true;
            let m = meta_features(burst.forward, burst.bytes, burst.count, burst.iat_us);
            let at = (fi * n + bi) * META_FEATURES;
            e.meta[at..at + META_FEATURES].copy_from_slice(&m);
        }
    }
    e
}

fn float(dtype: DType, dims: Vec<i64>, v: Vec<f64>) -> Tensor {
    let data = match dtype {
        DType::F64 => Data::F64(v),
        _ => Data::F32(v.into_iter().map(|x| x as f32).collect()),
    };
    Tensor { dims, data }
}

/// The input tensors, moved out of `e` (its counters stay for [`batch`]).
fn base_tensors(e: &mut Encoded, b: usize, lay: &Layout) -> Vec<(String, Tensor)> {
    let (n, l) = (e.n as i64, e.l as i64);
    vec![
        (
            "input_ids".into(),
            Tensor {
                dims: vec![b as i64, n, l],
                data: Data::I64(std::mem::take(&mut e.ids)),
            },
        ),
        (
            "protocol".into(),
            Tensor {
                dims: vec![b as i64],
                data: Data::I64(std::mem::take(&mut e.protocol)),
            },
        ),
        (
            "burst_meta".into(),
            float(
                lay.dtype,
                vec![b as i64, n, META_FEATURES as i64],
                std::mem::take(&mut e.meta),
            ),
        ),
    ]
}

fn batch(e: &Encoded, tensors: Vec<(String, Tensor)>, flows: usize) -> Batch {
    Batch {
        tensors,
        flows,
        tokens: e.tokens,
        cut_tokens: e.cut_tokens,
        cut_bursts: e.cut_bursts,
    }
}

/// The model inputs only (inference).
pub fn inference_batch(flows: &[&TokenizedFlow], lay: &Layout) -> Batch {
    let mut e = encode(flows, lay);
    let t = base_tensors(&mut e, flows.len(), lay);
    batch(&e, t, flows.len())
}

/// Inputs plus `class_labels` (−100 = no label) for the classification objective.
pub fn classify_batch(flows: &[&TokenizedFlow], labels: &[i64], lay: &Layout) -> Batch {
    assert_eq!(flows.len(), labels.len(), "one label per flow");
    let mut e = encode(flows, lay);
    let mut t = base_tensors(&mut e, flows.len(), lay);
    t.push((
        "class_labels".into(),
        Tensor {
            dims: vec![labels.len() as i64],
            data: Data::I64(labels.to_vec()),
        },
    ));
    batch(&e, t, flows.len())
}

/// Inputs with the pretraining corruptions applied, and their targets.
pub fn pretrain_batch(
    flows: &[&TokenizedFlow],
    lay: &Layout,
    masking: &Masking,
    rng: &mut SplitMix64,
) -> Batch {
    let mut e = encode(flows, lay);
    let (b, n, l) = (flows.len(), e.n, e.l);
    let pad = lay.vocab.pad as i64;

    // 1. Swapped bursts.
    let mut swap = vec![0.0; b * n];
    if b > 1 {
        let present_of: Vec<Vec<usize>> = (0..b)
            .map(|f| (0..n).filter(|&k| e.present[f * n + k]).collect())
            .collect();
        let (orig_ids, orig_meta) = (e.ids.clone(), e.meta.clone());
        for f in 0..b {
            for k in 0..n {
                if !e.present[f * n + k] || rng.uniform() >= masking.swap_prob {
                    continue;
                }
                let other = (f + 1 + (rng.next_u64() % (b as u64 - 1)) as usize) % b;
                let choices = &present_of[other];
                if choices.is_empty() {
                    continue;
                }
                let src = choices[(rng.next_u64() % choices.len() as u64) as usize];
                let (dst_row, src_row) = ((f * n + k) * l, (other * n + src) * l);
                e.ids[dst_row..dst_row + l].copy_from_slice(&orig_ids[src_row..src_row + l]);
                let (dm, sm) = (
                    (f * n + k) * META_FEATURES,
                    (other * n + src) * META_FEATURES,
                );
                e.meta[dm..dm + META_FEATURES].copy_from_slice(&orig_meta[sm..sm + META_FEATURES]);
                swap[f * n + k] = 1.0;
            }
        }
    }

    // 2. Masked metadata.
    let mut meta_targets = vec![0.0; b * n * META_TARGETS];
    let mut meta_weight = vec![0.0; b * n];
    let mut direction = vec![0.0; b * n];
    for s in 0..b * n {
        if !e.present[s] || rng.uniform() >= masking.meta_mask_prob {
            continue;
        }
        let m = &mut e.meta[s * META_FEATURES..(s + 1) * META_FEATURES];
        direction[s] = if m[0] > 0.0 { 1.0 } else { 0.0 };
        meta_targets[s * META_TARGETS..(s + 1) * META_TARGETS].copy_from_slice(&m[1..]);
        meta_weight[s] = 1.0;
        m.fill(0.0);
    }

    // 3. Masked tokens.
    let first = lay.vocab.token_shift as u64;
    let span = u16::MAX as u64 + 1;
    let mut index = Vec::new();
    let mut labels = Vec::new();
    let mut first_token = None;
    for s in 0..b * n {
        for k in 1..l {
            let at = s * l + k;
            let id = e.ids[at];
            if id == pad {
                continue;
            }
            first_token.get_or_insert(at);
            if rng.uniform() >= masking.mlm_prob {
                continue;
            }
            index.push(at as i64);
            labels.push(id);
            let r = rng.uniform();
            if r < masking.mask_replace {
                e.ids[at] = lay.vocab.mask as i64;
            } else if r < masking.mask_replace + masking.random_replace {
                e.ids[at] = (first + rng.next_u64() % span) as i64;
            }
        }
    }
    if index.is_empty() {
        // Keep the masked-token loss defined on tiny batches: predict one unmasked token.
        if let Some(at) = first_token {
            index.push(at as i64);
            labels.push(e.ids[at]);
        }
    }

    let dt = lay.dtype;
    let (bi, ni) = (b as i64, n as i64);
    let mut t = base_tensors(&mut e, b, lay);
    let tn = index.len() as i64;
    t.push((
        "mlm_index".into(),
        Tensor {
            dims: vec![tn],
            data: Data::I64(index),
        },
    ));
    t.push((
        "mlm_labels".into(),
        Tensor {
            dims: vec![tn],
            data: Data::I64(labels),
        },
    ));
    t.push(("swap_labels".into(), float(dt, vec![bi, ni], swap)));
    t.push((
        "meta_targets".into(),
        float(dt, vec![bi, ni, META_TARGETS as i64], meta_targets),
    ));
    t.push(("meta_weight".into(), float(dt, vec![bi, ni], meta_weight)));
    t.push((
        "direction_labels".into(),
        float(dt, vec![bi, ni], direction),
    ));
    batch(&e, t, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netfm_tokenizer::Burst;

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
        Layout::of(&cfg, DType::F32)
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
