//! Flows to the batches netFound's own model takes: the tensors netFound's tokenizer and
//! `SimpleDataCollator` feed it (inference, fine-tuning) and the corruptions of its
//! `DataCollatorWithMeta` (pretraining), in the dense layout netfm's netFound graphs read.
//! `docs/netfound-architecture.md` (sections 2, 4.6, 7) gives netFound's rules; the ones
//! used here:
//!
//! - **Payload stripped by protocol**: a packet record is `h + 6` tokens (`h` = 12 TCP, 6
//!   UDP, 7 ICMP, then 6 payload tokens); of each burst the first `h` tokens of every
//!   record are kept. Other protocols cannot be fed ([`netfound_unsupported`]).
//! - **Inputs**, for `B` flows × `N` bursts × `L` slots: `input_ids [B,N,L]` (slot 0 of a
//!   burst CLS, then its stripped tokens + 1, then PAD 0; padding bursts all PAD),
//!   `attention_mask [B,N,L]` (1 on the CLS and the kept tokens), `burst_meta [B,N,4]` raw
//!   per burst (direction ±1, bytes, packets, iat in integer ms as netFound truncates it;
//!   zeros for padding bursts), `protocol [B]`. netFound's per-token metadata arrays are
//!   this burst value wherever `attention_mask` is 1 and 0 elsewhere, which is how the
//!   graphs rebuild them.
//! - **Padding** ([`NetfoundPadding`]): the batch's own `N` (most bursts) and `L` (longest
//!   stripped burst + 1), as netFound's collator pads; or the canonical `(max_bursts,
//!   max_burst_length)` = (12, 73), the default, because netFound's pooled outputs and its
//!   embedding depend on the padding (design doc 3.7) and large batches reach it anyway.
//! - **Limits**: netFound needs at most `max_bursts` bursts and `max_burst_length − 1`
//!   stripped tokens per burst (it misindexes otherwise); netfm cuts longer flows and
//!   bursts and counts the cuts ([`Batch::cut_bursts`], [`Batch::cut_tokens`]). A burst
//!   with no stripped token still has its CLS slot.
//!
//! Batches: [`netfound_inference_batch`] (the inputs), [`netfound_classify_batch`]
//! (+ `class_labels [B]`, `class_weight [C]`), [`netfound_score_batch`] (the anomaly score:
//! netfm's fixed masking, field slot `j ≥ 1` of burst `k` replaced by MASK when
//! `(j + k) % SCORE_MASK_PERIOD == 0`, + `mlm_index [T]` flat `b·N·L + n·L + l` and
//! `mlm_labels [T]`), [`netfound_pretrain_batch`].
//!
//! Pretraining corruptions, in netFound's order, drawn from netfm's seeded generator (the
//! distributions are netFound's, the draws netfm's own):
//! 1. **swap**: each flow, with `swap_rate`, gets one burst `r` (uniform among its
//!    bursts) overwritten by burst `r'` (uniform) of another flow `f` (uniform over the
//!    batch, `f = i` turned into `i + 1 mod B`): the `L` slots of `input_ids` only — its
//!    `attention_mask` and metadata stay the original burst's (`swap_labels [B]` 0/1);
//! 2. **metadata mask** `μ [B,N]`: in flows of more than 3 bursts, each of the `N` burst
//!    slots (padding bursts included), except the swapped burst, with probability 0.3;
//!    `burst_meta` is zeroed there. `meta_weight [B,N]` = μ, `meta_targets [B,N,3]` =
//!    `[iat ms / 1000, bytes / 1000, packets]` of the unmasked values (zeros for padding
//!    bursts), `direction_labels [B,N]` = 1 forward / 0 backward on real bursts with μ = 1,
//!    −100 elsewhere;
//! 3. **MLM**: each field slot of the unswapped real bursts (never CLS or PAD) with
//!    `mlm_probability`; a selected slot becomes MASK (80 %), an id uniform in
//!    `[1, vocab_size)` (10 %) or stays (10 %); `mlm_index [T]`, `mlm_labels [T]` (the
//!    original ids). Should nothing be selected (tiny batches), the first field slot is
//!    added unchanged so the masked-token loss stays defined, as netfm's own builder does.
//!
//! The entry points of [`super::collate`] dispatch here when their [`super::collate::Layout`]
//! is for a netFound model, so the jobs need nothing else; a flow
//! [`netfound_unsupported`] names a reason for is laid out as a flow without bursts (all
//! padding, protocol 0) and counted in [`Batch::unsupported`]: jobs skip and count such
//! flows before batching.

use super::collate::{finish, float, ints, lay_dense, masked_tensors, Batch, Placed, Work};
use netfm_models::params::SplitMix64;
use netfm_models::{DType, Data, ModelConfig, Tensor, VocabSpec};
use netfm_tokenizer::fields::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use netfm_tokenizer::vocab::iat_model_value;
use netfm_tokenizer::{Burst, TokenizedFlow};
use serde::{Deserialize, Serialize};

/// Payload tokens after the header tokens of each packet record.
pub const PAYLOAD_TOKENS: usize = 6;
/// Probability that a burst slot's metadata is masked in pretraining (netFound's fixed 0.3).
pub const META_MASK_RATE: f64 = 0.3;
/// Metadata is masked only in flows of more than this many bursts.
pub const META_MASK_MIN_BURSTS: usize = 3;
/// netFound's share of selected MLM slots replaced by MASK, and by a random id.
pub const MLM_MASK_SHARE: f64 = 0.8;
pub const MLM_RANDOM_SHARE: f64 = 0.1;
/// The direction label of a burst without one (PyTorch's `ignore_index`).
pub const IGNORE_LABEL: i64 = -100;

/// Header tokens per packet record netFound keeps when it strips the payload.
pub fn header_tokens(protocol: u8) -> Option<usize> {
    match protocol {
        PROTO_TCP => Some(12),
        PROTO_UDP => Some(6),
        PROTO_ICMP => Some(7),
        _ => None,
    }
}

/// Why a netFound model cannot take this flow, or None when it can.
pub fn netfound_unsupported(flow: &TokenizedFlow) -> Option<&'static str> {
    let Some(h) = header_tokens(flow.protocol) else {
        return Some("protocol other than TCP, UDP and ICMP (netFound strips only those)");
    };
    let records_fit = flow
        .bursts_with_tokens()
        .all(|(b, tokens)| tokens.len() == b.count as usize * (h + PAYLOAD_TOKENS));
    if !records_fit {
        return Some(
            "packets are not netFound's default records of header + 6 payload tokens \
             (a --tcp-options or payload-free tokenization)",
        );
    }
    None
}

/// The flow with each burst's payload tokens removed (netFound's `strip_payload`): of
/// every `h + 6` tokens the first `h` kept. A flow of an unsupported protocol loses all
/// its tokens.
pub fn strip_payload(flow: &TokenizedFlow) -> TokenizedFlow {
    let h = header_tokens(flow.protocol).unwrap_or(0);
    let mut out = TokenizedFlow {
        tokens: Vec::with_capacity(flow.tokens.len() * h / (h + PAYLOAD_TOKENS)),
        bursts: Vec::with_capacity(flow.bursts.len()),
        ..without_bursts(flow)
    };
    let mut kept = Vec::new();
    for (burst, tokens) in flow.bursts_with_tokens() {
        kept.clear();
        for record in tokens.chunks(h + PAYLOAD_TOKENS) {
            kept.extend_from_slice(&record[..record.len().min(h)]);
        }
        out.push_burst(burst.clone(), &kept);
    }
    out
}

/// `flow` without its tokens and bursts.
fn without_bursts(flow: &TokenizedFlow) -> TokenizedFlow {
    TokenizedFlow {
        flow_duration_us: flow.flow_duration_us,
        protocol: flow.protocol,
        tokens: Vec::new(),
        bursts: Vec::new(),
        packets: flow.packets,
        inexact_late_packets: flow.inexact_late_packets,
    }
}

/// How a netFound batch is padded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetfoundPadding {
    /// `(max_bursts, max_burst_length)` whatever the batch holds: every flow's outputs are
    /// those netFound gives it in a full batch.
    #[default]
    Canonical,
    /// The batch's own most bursts and longest stripped burst + 1, as netFound's collator
    /// pads (outputs that read padding then depend on the other flows of the batch).
    Batch,
}

/// The shape and corruption rates of a netFound model's batches, from its config.
#[derive(Clone, Debug, PartialEq)]
pub struct NetfoundLayout {
    /// Bursts per flow kept (`max_bursts`).
    pub max_bursts: usize,
    /// Slots per burst, CLS included (`max_burst_length`).
    pub max_burst_length: usize,
    /// Rows of the word embedding: random MLM ids are drawn from `[1, vocab_size)`.
    pub vocab_size: u32,
    /// PAD, CLS, MASK and the token shift.
    pub vocab: VocabSpec,
    /// dtype of the float tensors (`burst_meta`, targets, class weights).
    pub dtype: DType,
    pub padding: NetfoundPadding,
    /// Pretraining: netFound's `mlm_probability` and `swap_rate`.
    pub mlm_probability: f64,
    pub swap_rate: f64,
}

impl NetfoundLayout {
    /// The layout of a netFound model (`cfg.netfound`), canonical padding; None for
    /// netfm's own models.
    pub fn of(cfg: &ModelConfig, dtype: DType) -> Option<NetfoundLayout> {
        let nf = cfg.netfound.as_ref()?;
        Some(NetfoundLayout {
            max_bursts: nf.max_bursts,
            max_burst_length: nf.max_burst_length,
            vocab_size: nf.vocab_size as u32,
            vocab: cfg.vocab.clone(),
            dtype,
            padding: NetfoundPadding::default(),
            mlm_probability: nf.mlm_probability,
            swap_rate: nf.swap_rate,
        })
    }
}

fn burst_meta(b: &Burst) -> [f64; 4] {
    [
        if b.forward { 1.0 } else { -1.0 },
        b.bytes as f64,
        b.count as f64,
        iat_model_value(b.iat_us) as f64,
    ]
}

/// The stripped, cut bursts of a batch, padded as the layout says.
fn work(flows: &[&TokenizedFlow], nf: &NetfoundLayout) -> Work {
    let mut unsupported = 0;
    let stripped: Vec<TokenizedFlow> = flows
        .iter()
        .map(|f| match netfound_unsupported(f) {
            None => strip_payload(f),
            Some(_) => {
                unsupported += 1;
                TokenizedFlow {
                    protocol: 0,
                    ..without_bursts(f)
                }
            }
        })
        .collect();
    let refs: Vec<&TokenizedFlow> = stripped.iter().collect();
    let mut w = Work::build(
        &refs,
        nf.max_bursts,
        nf.max_burst_length,
        nf.vocab.token_shift,
        burst_meta,
    );
    w.unsupported = unsupported;
    if nf.padding == NetfoundPadding::Canonical {
        w.n = nf.max_bursts.max(1);
        w.l = nf.max_burst_length.max(1);
    }
    w
}

/// `input_ids`, `protocol`, `burst_meta` and `attention_mask` of `w` (as it is now).
fn place(w: &Work, nf: &NetfoundLayout) -> Placed {
    let mut placed = lay_dense(w, &nf.vocab, nf.dtype);
    let (b, n, l) = (w.flows.len(), w.n, w.l);
    let mut mask = vec![0i64; b * n * l];
    for (f, bursts) in w.flows.iter().enumerate() {
        for (k, burst) in bursts.iter().enumerate() {
            let row = (f * n + k) * l;
            mask[row..row + 1 + burst.ids.len()].fill(1);
        }
    }
    let dims = vec![b as i64, n as i64, l as i64];
    placed
        .tensors
        .push(("attention_mask".into(), ints(dims, mask)));
    placed
}

/// netFound's model inputs only (inference).
pub fn netfound_inference_batch(flows: &[&TokenizedFlow], nf: &NetfoundLayout) -> Batch {
    let w = work(flows, nf);
    let placed = place(&w, nf);
    finish(&w, placed, Vec::new())
}

/// Inputs plus `class_labels [B]` (−100 = no label) and `class_weight [C]`.
pub fn netfound_classify_batch(
    flows: &[&TokenizedFlow],
    labels: &[i64],
    class_weight: &[f64],
    nf: &NetfoundLayout,
) -> Batch {
    assert_eq!(flows.len(), labels.len(), "one label per flow");
    let w = work(flows, nf);
    let placed = place(&w, nf);
    let extra = vec![
        (
            "class_labels".into(),
            ints(vec![labels.len() as i64], labels.to_vec()),
        ),
        (
            "class_weight".into(),
            float(
                nf.dtype,
                vec![class_weight.len() as i64],
                class_weight.to_vec(),
            ),
        ),
    ];
    finish(&w, placed, extra)
}

/// Inputs with the anomaly score's fixed masking (collate.rs's rule) and
/// `mlm_index`/`mlm_labels`; `masked_flow`/`masked_pos` tell whose each masked slot is.
pub fn netfound_score_batch(flows: &[&TokenizedFlow], nf: &NetfoundLayout) -> Batch {
    let mut w = work(flows, nf);
    w.mask_fixed(nf.vocab.mask as i64);
    let placed = place(&w, nf);
    let extra = masked_tensors(&w, &placed);
    finish(&w, placed, extra)
}

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// A swap: flow `i`'s burst `r` gets the ids of burst `r2` of flow `f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Swap {
    r: usize,
    f: usize,
    r2: usize,
}

/// The draws of one pretraining batch, before they are applied to the tensors.
struct Corruption {
    /// Per flow: its swap.
    swaps: Vec<Option<Swap>>,
    /// `[B, N]`: metadata masked.
    mu: Vec<bool>,
}

/// Steps 1 (swap) and 2 (metadata mask) of the module docs; zeroes the masked bursts'
/// metadata in `w` (the targets are read before, by the caller).
fn draw_swaps_and_meta(w: &mut Work, nf: &NetfoundLayout, rng: &mut SplitMix64) -> Corruption {
    let (b, n) = (w.flows.len(), w.n);
    let mut swaps = vec![None; b];
    for (i, swap) in swaps.iter_mut().enumerate() {
        if rng.uniform() >= nf.swap_rate || w.flows[i].is_empty() {
            continue;
        }
        let r = below(rng, w.flows[i].len());
        let mut f = below(rng, b);
        if f == i {
            f = (i + 1) % b;
        }
        if w.flows[f].is_empty() {
            continue;
        }
        let r2 = below(rng, w.flows[f].len());
        *swap = Some(Swap { r, f, r2 });
    }
    let mut mu = vec![false; b * n];
    for i in 0..b {
        if w.flows[i].len() <= META_MASK_MIN_BURSTS {
            continue;
        }
        for k in 0..n {
            let drawn = rng.uniform() < META_MASK_RATE;
            if drawn && swaps[i].is_none_or(|s| s.r != k) {
                mu[i * n + k] = true;
                if let Some(burst) = w.flows[i].get_mut(k) {
                    burst.meta = [0.0; 4];
                }
            }
        }
    }
    Corruption { swaps, mu }
}

fn ids_mut(placed: &mut Placed) -> &mut Vec<i64> {
    match placed.tensors.iter_mut().find(|(n, _)| n == "input_ids") {
        Some((
            _,
            Tensor {
                data: Data::I64(v), ..
            },
        )) => v,
        _ => unreachable!("lay_dense writes int64 input_ids"),
    }
}

/// Inputs with netFound's pretraining corruptions applied (module docs), and their
/// targets: `mlm_index`, `mlm_labels`, `swap_labels`, `meta_targets`, `meta_weight`,
/// `direction_labels`. The same seed gives the same batch.
pub fn netfound_pretrain_batch(
    flows: &[&TokenizedFlow],
    nf: &NetfoundLayout,
    rng: &mut SplitMix64,
) -> Batch {
    let mut w = work(flows, nf);
    let (b, n, l) = (w.flows.len(), w.n, w.l);
    // Targets and directions from the unmasked metadata.
    let mut targets = vec![0.0; b * n * 3];
    let mut forward = vec![false; b * n];
    for (f, bursts) in w.flows.iter().enumerate() {
        for (k, burst) in bursts.iter().enumerate() {
            let m = burst.meta;
            let at = f * n + k;
            targets[at * 3..at * 3 + 3].copy_from_slice(&[m[3] / 1000.0, m[1] / 1000.0, m[2]]);
            forward[at] = m[0] > 0.0;
        }
    }
    let c = draw_swaps_and_meta(&mut w, nf, rng);
    let mut placed = place(&w, nf);
    let ids = ids_mut(&mut placed);
    let orig = ids.clone();
    for (i, s) in c.swaps.iter().enumerate() {
        if let Some(s) = s {
            let (dst, src) = ((i * n + s.r) * l, (s.f * n + s.r2) * l);
            ids[dst..dst + l].copy_from_slice(&orig[src..src + l]);
        }
    }
    // 3. MLM on the field slots of unswapped real bursts.
    let random_ids = u64::from(nf.vocab_size.max(2) - 1);
    let mut first = None;
    for (f, bursts) in w.flows.iter().enumerate() {
        for (k, burst) in bursts.iter().enumerate() {
            if c.swaps[f].is_some_and(|s| s.r == k) {
                continue;
            }
            let row = (f * n + k) * l;
            for j in 1..=burst.ids.len() {
                let slot = (f, k, j, orig[row + j]);
                first.get_or_insert(slot);
                if rng.uniform() >= nf.mlm_probability {
                    continue;
                }
                w.masked.push(slot);
                let r = rng.uniform();
                if r < MLM_MASK_SHARE {
                    ids[row + j] = nf.vocab.mask as i64;
                } else if r < MLM_MASK_SHARE + MLM_RANDOM_SHARE {
                    ids[row + j] = 1 + (rng.next_u64() % random_ids) as i64;
                }
            }
        }
    }
    if w.masked.is_empty() {
        w.masked.extend(first);
    }
    let mut extra = masked_tensors(&w, &placed);
    let swapped: Vec<i64> = c.swaps.iter().map(|s| s.is_some() as i64).collect();
    extra.push(("swap_labels".into(), ints(vec![b as i64], swapped)));
    let (bi, ni) = (b as i64, n as i64);
    extra.push((
        "meta_targets".into(),
        float(nf.dtype, vec![bi, ni, 3], targets),
    ));
    let weight = c.mu.iter().map(|&m| m as u8 as f64).collect();
    extra.push(("meta_weight".into(), float(nf.dtype, vec![bi, ni], weight)));
    let mut direction = vec![IGNORE_LABEL; b * n];
    for (f, bursts) in w.flows.iter().enumerate() {
        for k in 0..bursts.len() {
            let at = f * n + k;
            if c.mu[at] {
                direction[at] = forward[at] as i64;
            }
        }
    }
    extra.push(("direction_labels".into(), ints(vec![bi, ni], direction)));
    finish(&w, placed, extra)
}
