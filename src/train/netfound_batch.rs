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
    pretrain(flows, nf, rng).0
}

/// [`netfound_pretrain_batch`], and the swaps it drew.
fn pretrain(
    flows: &[&TokenizedFlow],
    nf: &NetfoundLayout,
    rng: &mut SplitMix64,
) -> (Batch, Vec<Option<Swap>>) {
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
    (finish(&w, placed, extra), c.swaps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::collate::SCORE_MASK_PERIOD;
    use crate::train::collate::{classify_batch, inference_batch, score_batch, Layout};
    use netfm_models::netfound_config::NetfoundConfig;

    const CLS: i64 = 65537;
    const MASK: i64 = 65538;

    /// A flow of `protocol` whose bursts have `(packets, forward)`; every packet record is
    /// `h + 6` tokens, all tokens of the batch distinct (`seed` tells flows apart).
    fn flow(seed: u16, protocol: u8, bursts: &[(u32, bool)]) -> TokenizedFlow {
        let per = header_tokens(protocol).unwrap_or(7) + PAYLOAD_TOKENS;
        let mut f = TokenizedFlow {
            flow_duration_us: 99,
            protocol,
            ..TokenizedFlow::default()
        };
        for (i, &(count, forward)) in bursts.iter().enumerate() {
            let tokens: Vec<u16> = (0..count as usize * per)
                .map(|t| seed * 4096 + i as u16 * 256 + t as u16)
                .collect();
            let burst = Burst {
                token_len: 0,
                forward,
                bytes: 100 * count + i as u32,
                count,
                iat_us: 2_999 + 1000 * i as u64,
                start_ns: 0,
            };
            f.push_burst(burst, &tokens);
        }
        f
    }

    fn layout(padding: NetfoundPadding) -> NetfoundLayout {
        NetfoundLayout {
            max_bursts: 5,
            max_burst_length: 1 + 2 * 12,
            vocab_size: 65600,
            vocab: VocabSpec::netfound(),
            dtype: DType::F32,
            padding,
            mlm_probability: 0.3,
            swap_rate: 0.5,
        }
    }

    fn ints_of<'a>(b: &'a Batch, name: &str) -> &'a [i64] {
        match &b.get(name).unwrap_or_else(|| panic!("no {name}")).data {
            Data::I64(v) => v,
            _ => panic!("{name} is not int64"),
        }
    }

    fn floats_of<'a>(b: &'a Batch, name: &str) -> &'a [f32] {
        match &b.get(name).unwrap_or_else(|| panic!("no {name}")).data {
            Data::F32(v) => v,
            _ => panic!("{name} is not float32"),
        }
    }

    fn netfound_config_json() -> String {
        serde_json::json!({
            "model_type": "netFound", "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 24, "vocab_size": 65600,
            "max_bursts": 12, "max_burst_length": 73, "max_position_embeddings": 73,
            "layer_norm_eps": 1e-12, "norm_eps": 1e-5, "strip_payload": true,
            "swap_rate": 0.25, "mlm_probability": 0.2
        })
        .to_string()
    }

    #[test]
    fn strips_each_packet_record_to_its_header() {
        let f = flow(0, PROTO_TCP, &[(2, true), (1, false)]);
        let s = strip_payload(&f);
        let b: Vec<Vec<u16>> = s.bursts_with_tokens().map(|(_, t)| t.to_vec()).collect();
        let want0: Vec<u16> = (0..12).chain(18..30).collect();
        assert_eq!(b, vec![want0, (256..268).collect()]);
        assert_eq!(s.bursts[0].token_len, 24);
        assert_eq!((s.bursts[0].bytes, s.bursts[1].forward), (200, false));
        for (proto, h) in [(PROTO_UDP, 6), (PROTO_ICMP, 7)] {
            let s = strip_payload(&flow(0, proto, &[(3, true)]));
            assert_eq!(s.tokens.len(), 3 * h);
            assert_eq!(s.tokens[h], (h + 6) as u16);
        }
        // A cut last record keeps what it has of its header.
        let mut f = TokenizedFlow {
            protocol: PROTO_UDP,
            ..TokenizedFlow::default()
        };
        let tokens: Vec<u16> = (0..15).collect();
        f.push_burst(flow(0, PROTO_UDP, &[(1, true)]).bursts[0].clone(), &tokens);
        assert_eq!(strip_payload(&f).tokens, vec![0, 1, 2, 3, 4, 5, 12, 13, 14]);
    }

    #[test]
    fn unsupported_flows_are_named() {
        assert_eq!(
            netfound_unsupported(&flow(0, PROTO_TCP, &[(6, true)])),
            None
        );
        assert_eq!(
            netfound_unsupported(&flow(0, PROTO_ICMP, &[(1, true)])),
            None
        );
        assert!(netfound_unsupported(&flow(0, 58, &[(1, true)]))
            .unwrap()
            .contains("protocol"));
        let mut f = flow(0, PROTO_UDP, &[(2, true)]);
        f.bursts[0].count = 3;
        assert!(netfound_unsupported(&f).unwrap().contains("records"));
        // Fed anyway: a flow without bursts, counted.
        let nf = layout(NetfoundPadding::Batch);
        let ok = flow(1, PROTO_UDP, &[(1, true)]);
        let b = netfound_inference_batch(&[&f, &ok], &nf);
        assert_eq!((b.unsupported, b.bursts, b.tokens), (1, 1, 6));
        assert_eq!(ints_of(&b, "protocol"), &[0, 17]);
        assert_eq!(b.get("input_ids").unwrap().dims, vec![2, 1, 7]);
        assert!(ints_of(&b, "attention_mask")[..7].iter().all(|&m| m == 0));
        // Pretraining copes with it (no burst to swap, none to donate).
        for seed in 0..20 {
            let b = netfound_pretrain_batch(&[&f, &ok], &nf, &mut SplitMix64(seed));
            assert_eq!(ints_of(&b, "swap_labels")[0], 0);
        }
    }

    #[test]
    fn layout_comes_from_a_netfound_config_only() {
        let nfc = NetfoundConfig::from_hf_json(&netfound_config_json()).unwrap();
        let cfg = nfc.model_config();
        let nf = NetfoundLayout::of(&cfg, DType::F64).unwrap();
        assert_eq!(
            (nf.max_bursts, nf.max_burst_length, nf.vocab_size),
            (12, 73, 65600)
        );
        assert_eq!((nf.swap_rate, nf.mlm_probability), (0.25, 0.2));
        assert_eq!(
            (nf.padding, nf.dtype),
            (NetfoundPadding::Canonical, DType::F64)
        );
        assert_eq!(Layout::of(&cfg, DType::F64).netfound, Some(nf));
        let own = ModelConfig::named("tiny").unwrap();
        assert_eq!(NetfoundLayout::of(&own, DType::F32), None);
        assert_eq!(Layout::of(&own, DType::F32).netfound, None);
    }

    #[test]
    fn lays_out_cls_shifted_tokens_raw_metadata_and_padding() {
        let a = flow(0, PROTO_TCP, &[(1, true), (2, false)]);
        let mut b = flow(1, PROTO_UDP, &[(1, false)]);
        // A burst without tokens (and packets) still has its CLS slot.
        b.push_burst(
            Burst {
                count: 0,
                ..a.bursts[0].clone()
            },
            &[],
        );
        let nf = layout(NetfoundPadding::Batch);
        let batch = netfound_inference_batch(&[&a, &b], &nf);
        let (n, l) = (2usize, 25usize);
        assert_eq!(batch.get("input_ids").unwrap().dims, vec![2, 2, 25]);
        assert_eq!(batch.get("burst_meta").unwrap().dims, vec![2, 2, 4]);
        let ids = ints_of(&batch, "input_ids");
        let mask = ints_of(&batch, "attention_mask");
        let want: Vec<i64> = std::iter::once(CLS).chain(1..13).collect();
        assert_eq!(&ids[..13], &want[..]);
        assert!(ids[13..l].iter().all(|&i| i == 0));
        assert_eq!(ids[l + 1], 257);
        assert_eq!(ids[l + 13], 257 + 18);
        let row = 2 * l;
        let want: Vec<i64> = std::iter::once(CLS).chain(4097..4103).collect();
        assert_eq!(&ids[row..row + 7], &want[..]);
        assert_eq!(&ids[3 * l..3 * l + 2], &[CLS, 0]);
        for (&id, &m) in ids.iter().zip(mask) {
            assert_eq!(m, (id != 0) as i64);
        }
        let meta = floats_of(&batch, "burst_meta");
        assert_eq!(&meta[..8], &[1.0, 100.0, 1.0, 2.0, -1.0, 201.0, 2.0, 3.0]);
        assert_eq!(&meta[8..12], &[-1.0, 100.0, 1.0, 2.0]);
        assert_eq!(&meta[12..16], &[1.0, 100.0, 0.0, 2.0]);
        assert_eq!(ints_of(&batch, "protocol"), &[6, 17]);
        assert_eq!(
            (batch.bursts, batch.tokens, batch.slots),
            (4, 36 + 6, 2 * n * l)
        );
        assert_eq!(batch.shape_stats(), (l, 2 * n));
        // Canonical: the same values in the (max_bursts, max_burst_length) grid.
        let c = netfound_inference_batch(&[&a, &b], &layout(NetfoundPadding::Canonical));
        assert_eq!(c.get("input_ids").unwrap().dims, vec![2, 5, 25]);
        let cids = ints_of(&c, "input_ids");
        assert_eq!(&cids[5 * 25..5 * 25 + 7], &ids[row..row + 7]);
        assert_eq!(floats_of(&c, "burst_meta")[20..24], meta[8..12]);
        assert!(floats_of(&c, "burst_meta")[28..40]
            .iter()
            .all(|&x| x == 0.0));
        // f64 when the layout says so.
        let f64_layout = NetfoundLayout {
            dtype: DType::F64,
            ..nf.clone()
        };
        let d = netfound_inference_batch(&[&a], &f64_layout);
        assert!(matches!(d.get("burst_meta").unwrap().data, Data::F64(_)));
    }

    #[test]
    fn long_flows_and_bursts_are_cut_and_counted() {
        let nf = layout(NetfoundPadding::Batch);
        let f = flow(
            0,
            PROTO_TCP,
            &[
                (3, true),
                (1, false),
                (1, true),
                (1, false),
                (1, true),
                (2, false),
                (1, true),
            ],
        );
        let b = netfound_inference_batch(&[&f], &nf);
        // 7 bursts → 5; burst 0 has 36 stripped tokens → 24.
        assert_eq!((b.cut_bursts, b.cut_tokens), (2, 12));
        assert_eq!(b.get("input_ids").unwrap().dims, vec![1, 5, 25]);
        assert_eq!(ints_of(&b, "attention_mask")[..25].iter().sum::<i64>(), 25);
        assert_eq!(b.tokens, 24 + 4 * 12);
    }

    #[test]
    fn score_masking_is_the_fixed_rule_only() {
        let nf = layout(NetfoundPadding::Canonical);
        let f = flow(0, PROTO_UDP, &[(1, true), (2, false)]);
        let plain = netfound_inference_batch(&[&f], &nf);
        let b = netfound_score_batch(&[&f], &nf);
        let (ids, orig) = (ints_of(&b, "input_ids"), ints_of(&plain, "input_ids"));
        let index = ints_of(&b, "mlm_index");
        let l = 25;
        let mut want = Vec::new();
        for (k, len) in [(0usize, 6usize), (1, 12)] {
            for j in 1..=len {
                if (j + k) % SCORE_MASK_PERIOD == 0 {
                    want.push((k * l + j) as i64);
                }
            }
        }
        assert_eq!(index, &want[..]);
        let labels: Vec<i64> = want.iter().map(|&i| orig[i as usize]).collect();
        assert_eq!(ints_of(&b, "mlm_labels"), &labels[..]);
        for s in 0..ids.len() {
            let expect = if want.contains(&(s as i64)) {
                MASK
            } else {
                orig[s]
            };
            assert_eq!(ids[s], expect);
        }
        assert_eq!(
            ints_of(&b, "attention_mask"),
            ints_of(&plain, "attention_mask")
        );
        assert_eq!(b.get("burst_meta"), plain.get("burst_meta"));
        assert_eq!(b.masked_flow, vec![0; want.len()]);
        let pos: Vec<u32> = want.iter().map(|&i| (i as usize % l) as u32).collect();
        assert_eq!(b.masked_pos, pos);
        // collate's entry point takes this path for a netFound layout.
        let mut lay = Layout::of(&ModelConfig::named("tiny").unwrap(), DType::F32);
        lay.netfound = Some(nf.clone());
        assert_eq!(score_batch(&[&f], &lay), b);
        assert_eq!(inference_batch(&[&f], &lay), plain);
    }

    #[test]
    fn classification_batches_add_labels_and_weights() {
        let nf = layout(NetfoundPadding::Batch);
        let (a, b) = (
            flow(0, PROTO_TCP, &[(1, true)]),
            flow(1, PROTO_ICMP, &[(2, false)]),
        );
        let batch = netfound_classify_batch(&[&a, &b], &[2, -100], &[1.0, 0.5, 2.0], &nf);
        assert_eq!(ints_of(&batch, "class_labels"), &[2, -100]);
        assert_eq!(floats_of(&batch, "class_weight"), &[1.0, 0.5, 2.0]);
        let mut lay = Layout::of(&ModelConfig::named("tiny").unwrap(), DType::F32);
        lay.netfound = Some(nf);
        assert_eq!(
            classify_batch(&[&a, &b], &[2, -100], &[1.0, 0.5, 2.0], &lay),
            batch
        );
        assert!(batch.get("attention_mask").is_some() && batch.get("token_pos").is_none());
    }

    #[test]
    fn swaps_copy_ids_only_and_exclude_the_swapped_burst() {
        let nf = layout(NetfoundPadding::Canonical);
        let (n, l) = (5, 25);
        let flows: Vec<TokenizedFlow> = (0..6)
            .map(|i| {
                let bursts: Vec<(u32, bool)> = (0..1 + i % 5)
                    .map(|k| (1 + (k as u32 + i as u32) % 2, k % 2 == 0))
                    .collect();
                flow(
                    i as u16,
                    if i % 2 == 0 { PROTO_TCP } else { PROTO_UDP },
                    &bursts,
                )
            })
            .collect();
        let refs: Vec<&TokenizedFlow> = flows.iter().collect();
        let plain = netfound_inference_batch(&refs, &nf);
        let orig = ints_of(&plain, "input_ids");
        let mut swaps_seen = 0;
        let mut self_donor = 0;
        for seed in 0..200 {
            let (b, swaps) = pretrain(&refs, &nf, &mut SplitMix64(seed));
            let ids = ints_of(&b, "input_ids");
            let mu = floats_of(&b, "meta_weight");
            let index = ints_of(&b, "mlm_index");
            assert_eq!(
                ints_of(&b, "attention_mask"),
                ints_of(&plain, "attention_mask")
            );
            let labels: Vec<i64> = swaps.iter().map(|s| s.is_some() as i64).collect();
            assert_eq!(ints_of(&b, "swap_labels"), &labels[..]);
            for (i, s) in swaps.iter().enumerate() {
                let Some(s) = s else { continue };
                swaps_seen += 1;
                self_donor += (s.f == i) as usize;
                assert!(s.r < flows[i].bursts.len() && s.r2 < flows[s.f].bursts.len());
                let (dst, src) = ((i * n + s.r) * l, (s.f * n + s.r2) * l);
                assert_eq!(
                    &ids[dst..dst + l],
                    &orig[src..src + l],
                    "the donor's L slots"
                );
                assert_eq!(mu[i * n + s.r], 0.0);
                assert!(index.iter().all(|&x| (x as usize) / l != i * n + s.r));
                // Its metadata stays the original burst's.
                let at = (i * n + s.r) * 4;
                assert_eq!(
                    &floats_of(&b, "burst_meta")[at..at + 4],
                    &floats_of(&plain, "burst_meta")[at..at + 4]
                );
            }
            assert_eq!(b, pretrain(&refs, &nf, &mut SplitMix64(seed)).0, "seeded");
        }
        assert!(swaps_seen > 400, "{swaps_seen}");
        assert_eq!(self_donor, 0, "another flow donates when B > 1");
        // One flow: it is its own donor.
        let one = [&flows[4]];
        let swapped = (0..50)
            .filter_map(|seed| pretrain(&one, &nf, &mut SplitMix64(seed)).1[0])
            .inspect(|s| assert_eq!(s.f, 0))
            .count();
        assert!(swapped > 10);
    }

    #[test]
    fn empty_mlm_draws_keep_one_target() {
        let nf = NetfoundLayout {
            mlm_probability: 0.0,
            swap_rate: 0.0,
            ..layout(NetfoundPadding::Batch)
        };
        let f = flow(0, PROTO_UDP, &[(1, true)]);
        let b = netfound_pretrain_batch(&[&f], &nf, &mut SplitMix64(1));
        assert_eq!(ints_of(&b, "mlm_index"), &[1]);
        assert_eq!(ints_of(&b, "mlm_labels"), &[1]);
        assert_eq!(ints_of(&b, "input_ids")[1], 1, "left unchanged");
        assert_eq!(ints_of(&b, "direction_labels"), &[IGNORE_LABEL]);
        assert_eq!(floats_of(&b, "meta_targets"), &[0.002, 0.1, 1.0]);
    }
}
