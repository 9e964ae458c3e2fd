//! netFound's batch builder (`netfm::train::netfound_batch`) against netFound's own golden
//! batch, `../shared/conformance/netfound-model/test-size/batch.safetensors` (the sibling of
//! `NETFM_CONFORMANCE_DIR` when that is set): built by netFound's tokenizer and
//! `SimpleDataCollator` from the Arrow rows `flows.json` lists. Those rows, read from
//! `../shared/conformance/netfound/arrow/`, and the same flows from netfm's own netFound-mode
//! tokenization of the conformance captures must give it bit for bit. Then netFound's
//! pretraining corruptions on that batch, and the limits (unsupported protocols, cuts).
//!
//! The data is required: a missing directory fails the tests, it never skips them.

use netfm::capture::{CaptureReader, Input};
use netfm::dataset::reader::DatasetReader;
use netfm::decode::{decode_frame, DecodeOptions};
use netfm::flow::netfound::NetfoundAssembler;
use netfm::flow::FlowAssembler;
use netfm::train::collate::{inference_batch, pretrain_batch, Batch, Layout, Masking};
use netfm::train::netfound_batch::{
    netfound_inference_batch, netfound_pretrain_batch, netfound_unsupported, NetfoundLayout,
    NetfoundPadding,
};
use netfm_models::netfound_config::NetfoundConfig;
use netfm_models::params::SplitMix64;
use netfm_models::safetensors::{parse, SafeTensors};
use netfm_models::{DType, Data, ModelConfig, Tensor};
use netfm_tokenizer::burst::BurstConfig;
use netfm_tokenizer::direction::InternalNetworks;
use netfm_tokenizer::TokenizedFlow;
use std::fs;
use std::path::PathBuf;

mod common;
use common::conformance_dir;

const CLS: i64 = 65537;
const MASK: i64 = 65538;

fn model_dir() -> PathBuf {
    let dir = conformance_dir()
        .parent()
        .expect("conformance dir has a parent")
        .join("netfound-model/test-size");
    assert!(
        dir.join("batch.safetensors").is_file(),
        "netFound model conformance data not found at {}",
        dir.display()
    );
    dir
}

fn golden() -> SafeTensors {
    let path = model_dir().join("batch.safetensors");
    parse(&fs::read(&path).expect("batch.safetensors")).expect("safetensors")
}

/// The test checkpoint's config as netfm reads it.
fn model_config() -> ModelConfig {
    let text = fs::read_to_string(model_dir().join("model/config.json")).expect("config.json");
    NetfoundConfig::from_hf_json(&text)
        .expect("netFound config")
        .model_config()
}

/// `(arrow file, row)` of each flow of the golden batch, in order.
fn listed_rows() -> Vec<(String, usize)> {
    let text = fs::read_to_string(model_dir().join("flows.json")).expect("flows.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .map(|e| {
            (
                e["arrow_file"].as_str().expect("arrow_file").to_string(),
                e["row"].as_u64().expect("row") as usize,
            )
        })
        .collect()
}

fn arrow_file(name: &str) -> Vec<TokenizedFlow> {
    let path = conformance_dir().join("arrow").join(name);
    let mut reader = DatasetReader::open(&path).expect("arrow file");
    let rows: Vec<TokenizedFlow> = reader.by_ref().map(|r| r.expect("row").flow).collect();
    assert_eq!(reader.skipped(), 0, "{name}: malformed rows");
    rows
}

/// The golden batch's flows from netFound's Arrow rows.
fn arrow_flows() -> Vec<TokenizedFlow> {
    listed_rows()
        .iter()
        .map(|(file, row)| arrow_file(file).swap_remove(*row))
        .collect()
}

/// What a row holds (the Arrow rows have no packet times).
fn row_key(f: &TokenizedFlow) -> impl PartialEq + std::fmt::Debug {
    let bursts: Vec<_> = f
        .bursts_with_tokens()
        .map(|(b, t)| (t.to_vec(), b.forward, b.bytes, b.count, b.iat_us))
        .collect();
    (f.flow_duration_us, f.protocol, bursts)
}

fn capture_flows(stem: &str) -> Vec<TokenizedFlow> {
    let dir = conformance_dir().join("pcaps");
    let path = ["pcap", "pcapng"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no capture for {stem}"));
    let mut asm =
        NetfoundAssembler::new(BurstConfig::default(), InternalNetworks::netfound_default());
    let mut flows = Vec::new();
    let mut reader = CaptureReader::open(&Input::File(path)).expect("capture");
    while let Some(frame) = reader.next_frame() {
        if let Ok(pkt) = decode_frame(&frame, &DecodeOptions::NETFOUND) {
            asm.push(&pkt, &mut flows);
        }
    }
    asm.end_of_file(&mut flows);
    flows.into_iter().map(|f| f.tokens).collect()
}

/// The same flows from netfm's netFound mode on the conformance captures.
fn tokenized_flows(arrow: &[TokenizedFlow]) -> Vec<TokenizedFlow> {
    listed_rows()
        .iter()
        .zip(arrow)
        .map(|((file, row), want)| {
            let stem = file.strip_suffix(".arrow").expect(".arrow");
            capture_flows(stem)
                .into_iter()
                .find(|f| row_key(f) == row_key(want))
                .unwrap_or_else(|| panic!("{stem}: netfm made no flow equal to row {row}"))
        })
        .collect()
}

fn ints<'a>(b: &'a Batch, name: &str) -> &'a [i64] {
    match &b.get(name).unwrap_or_else(|| panic!("no {name}")).data {
        Data::I64(v) => v,
        _ => panic!("{name} is not int64"),
    }
}

fn floats<'a>(b: &'a Batch, name: &str) -> &'a [f32] {
    match &b.get(name).unwrap_or_else(|| panic!("no {name}")).data {
        Data::F32(v) => v,
        _ => panic!("{name} is not float32"),
    }
}

fn golden_ints<'a>(g: &'a SafeTensors, name: &str) -> &'a Tensor {
    let t = &g.tensors[name];
    assert!(matches!(t.data, Data::I64(_)), "{name} is int64");
    t
}

fn golden_f32<'a>(g: &'a SafeTensors, name: &str) -> &'a [f32] {
    match &g.tensors[name].data {
        Data::F32(v) => v,
        _ => panic!("{name} is not float32"),
    }
}

fn layout(padding: NetfoundPadding) -> NetfoundLayout {
    NetfoundLayout {
        padding,
        ..NetfoundLayout::of(&model_config(), DType::F32).expect("a netFound model")
    }
}

/// `batch` equals the golden batch bit for bit.
fn assert_golden(batch: &Batch, what: &str) {
    let g = golden();
    let (b, n, l) = (12usize, 12usize, 73usize);
    assert_eq!(
        batch.get("input_ids").unwrap().dims,
        vec![12, 12, 73],
        "{what}"
    );
    assert_eq!(
        batch.get("attention_mask").unwrap().dims,
        vec![12, 12, 73],
        "{what}"
    );
    assert_eq!(batch.get("burst_meta").unwrap().dims, vec![12, 12, 4]);
    for name in ["input_ids", "attention_mask", "protocol"] {
        let want = golden_ints(&g, name);
        let Data::I64(want) = &want.data else {
            unreachable!()
        };
        assert!(ints(batch, name) == &want[..], "{what}: {name} differs");
    }
    // The per-token metadata at each burst's CLS slot is the burst's value.
    let meta = floats(batch, "burst_meta");
    for (c, name) in ["direction", "bytes", "pkt_count", "iats"]
        .iter()
        .enumerate()
    {
        let want = golden_f32(&g, name);
        for f in 0..b {
            for k in 0..n {
                let (ours, theirs) = (meta[(f * n + k) * 4 + c], want[f * n * l + k * l]);
                assert_eq!(
                    ours.to_bits(),
                    theirs.to_bits(),
                    "{what}: {name} of flow {f} burst {k}: {ours} vs {theirs}"
                );
            }
        }
        // …and netFound's per-token array is that value wherever the mask is 1, else 0.
        let mask = ints(batch, "attention_mask");
        for (s, (&m, &v)) in mask.iter().zip(want).enumerate() {
            let burst = s / l;
            let expect = if m == 1 { meta[burst * 4 + c] } else { 0.0 };
            assert_eq!(v.to_bits(), expect.to_bits(), "{what}: {name} at slot {s}");
        }
    }
    // dataset_burst_sizes: the attended slots of each burst minus its CLS.
    let Data::I64(sizes) = &golden_ints(&g, "dataset_burst_sizes").data else {
        unreachable!()
    };
    let mask = ints(batch, "attention_mask");
    for (burst, &size) in sizes.iter().enumerate() {
        let attended: i64 = mask[burst * l..(burst + 1) * l].iter().sum();
        assert_eq!((attended - 1).max(0), size, "{what}: burst {burst}");
    }
    // Unswapped: the mask is exactly the non-padding ids.
    for (&id, &m) in ints(batch, "input_ids").iter().zip(mask) {
        assert_eq!(m, (id != 0) as i64, "{what}");
    }
    assert_eq!(
        (batch.flows, batch.cut_bursts, batch.cut_tokens),
        (12, 0, 0)
    );
    assert_eq!(batch.unsupported, 0);
    assert_eq!(batch.slots, 12 * 876);
    assert_eq!(batch.tokens as i64, sizes.iter().sum::<i64>());
}

#[test]
fn arrow_rows_give_the_golden_batch() {
    let flows = arrow_flows();
    let refs: Vec<&TokenizedFlow> = flows.iter().collect();
    for padding in [NetfoundPadding::Batch, NetfoundPadding::Canonical] {
        let batch = netfound_inference_batch(&refs, &layout(padding));
        assert_golden(&batch, &format!("arrow rows, {padding:?} padding"));
    }
    // The jobs' entry point takes the same path for a netFound model (canonical padding).
    let lay = Layout::of(&model_config(), DType::F32);
    assert_eq!(
        lay.netfound.as_ref().map(|n| n.padding),
        Some(NetfoundPadding::Canonical)
    );
    assert_golden(&inference_batch(&refs, &lay), "collate::inference_batch");
}

#[test]
fn netfm_tokenization_of_the_captures_gives_the_golden_batch() {
    let arrow = arrow_flows();
    let flows = tokenized_flows(&arrow);
    let refs: Vec<&TokenizedFlow> = flows.iter().collect();
    for padding in [NetfoundPadding::Batch, NetfoundPadding::Canonical] {
        let batch = netfound_inference_batch(&refs, &layout(padding));
        assert_golden(
            &batch,
            &format!("netfm's tokenization, {padding:?} padding"),
        );
    }
}

#[test]
fn batch_padding_follows_the_batch_and_canonical_does_not() {
    let flows = arrow_flows();
    // Flow 9 (NTP): 2 bursts, 6 stripped UDP tokens each.
    let one = [&flows[9]];
    let b = netfound_inference_batch(&one, &layout(NetfoundPadding::Batch));
    assert_eq!(b.get("input_ids").unwrap().dims, vec![1, 2, 7]);
    assert_eq!(b.slots, 14);
    let c = netfound_inference_batch(&one, &layout(NetfoundPadding::Canonical));
    assert_eq!(c.get("input_ids").unwrap().dims, vec![1, 12, 73]);
    // The flow's row of the golden batch.
    let Data::I64(want) = &golden().tensors["input_ids"].data else {
        unreachable!()
    };
    assert!(ints(&c, "input_ids") == &want[9 * 876..10 * 876]);
    let ids = ints(&b, "input_ids");
    for k in 0..2 {
        assert_eq!(
            &ids[k * 7..k * 7 + 7],
            &want[9 * 876 + k * 73..9 * 876 + k * 73 + 7]
        );
    }
}

/// The swapped burst of each flow with `swap_labels` 1, where it can be told: the one burst
/// whose ids differ from the uncorrupted batch outside the MLM slots.
fn swapped_bursts(batch: &Batch, plain: &Batch, n: usize, l: usize) -> Vec<Option<usize>> {
    let ids = ints(batch, "input_ids");
    let orig = ints(plain, "input_ids");
    let mlm: std::collections::HashSet<usize> = ints(batch, "mlm_index")
        .iter()
        .map(|&i| i as usize)
        .collect();
    let swap = ints(batch, "swap_labels");
    (0..swap.len())
        .map(|f| {
            let differing: Vec<usize> = (0..n)
                .filter(|&k| {
                    (0..l).any(|j| {
                        let s = (f * n + k) * l + j;
                        ids[s] != orig[s] && !mlm.contains(&s)
                    })
                })
                .collect();
            if swap[f] == 0 {
                assert!(
                    differing.is_empty(),
                    "flow {f} is not swapped: {differing:?}"
                );
            }
            assert!(differing.len() <= 1, "flow {f}: one burst swapped at most");
            differing.first().copied().filter(|_| swap[f] == 1)
        })
        .collect()
}

/// Counts over many pretraining batches of the golden flows.
#[derive(Default, Debug)]
struct Rates {
    flows: usize,
    swapped: usize,
    meta_slots: usize,
    meta_masked: usize,
    mlm_slots: usize,
    mlm_selected: usize,
    to_mask: usize,
    to_random: usize,
    kept: usize,
}

/// Checks one pretraining batch's structure against the uncorrupted batch; adds to `rates`.
fn check_pretrain(batch: &Batch, plain: &Batch, flows: &[TokenizedFlow], rates: &mut Rates) {
    let dims = &batch.get("input_ids").unwrap().dims;
    let (b, n, l) = (dims[0] as usize, dims[1] as usize, dims[2] as usize);
    let ids = ints(batch, "input_ids");
    let orig = ints(plain, "input_ids");
    let index = ints(batch, "mlm_index");
    let labels = ints(batch, "mlm_labels");
    let swap = ints(batch, "swap_labels");
    let mu = floats(batch, "meta_weight");
    let meta = floats(batch, "burst_meta");
    let orig_meta = floats(plain, "burst_meta");
    let targets = floats(batch, "meta_targets");
    let direction = ints(batch, "direction_labels");
    assert_eq!(batch.get("swap_labels").unwrap().dims, vec![b as i64]);
    assert_eq!(
        batch.get("meta_targets").unwrap().dims,
        vec![b as i64, n as i64, 3]
    );
    assert_eq!(
        batch.get("meta_weight").unwrap().dims,
        vec![b as i64, n as i64]
    );
    assert_eq!(
        batch.get("direction_labels").unwrap().dims,
        vec![b as i64, n as i64]
    );
    assert_eq!(index.len(), labels.len());
    assert_eq!(batch.masked_flow.len(), index.len());
    // A swap changes input_ids only: the mask is the uncorrupted one.
    assert_eq!(
        ints(batch, "attention_mask"),
        ints(plain, "attention_mask"),
        "attention_mask untouched"
    );
    let swapped = swapped_bursts(batch, plain, n, l);
    let real = |f: usize| flows[f].bursts.len().min(n);
    // MLM: original ids, never CLS or PAD, never in the swapped burst; what the slot became.
    for (t, (&at, &label)) in index.iter().zip(labels).enumerate() {
        let at = at as usize;
        let (f, k, j) = (at / (n * l), at / l % n, at % l);
        assert_eq!(label, orig[at], "label is the original id");
        assert!(label != 0 && label != CLS, "no CLS/PAD slot selected");
        assert!(k < real(f) && j >= 1);
        assert_eq!(
            (batch.masked_flow[t] as usize, batch.masked_pos[t] as usize),
            (f, j)
        );
        assert_ne!(swapped[f], Some(k), "no MLM in the swapped burst");
        let id = ids[at];
        assert!((1..65600).contains(&id));
        if id == MASK {
            rates.to_mask += 1;
        } else if id == label {
            rates.kept += 1;
        } else {
            rates.to_random += 1;
        }
    }
    // Only MLM slots changed outside the swapped bursts.
    let selected: std::collections::HashSet<usize> = index.iter().map(|&i| i as usize).collect();
    for s in 0..ids.len() {
        let f = s / (n * l);
        if ids[s] != orig[s] && swap[f] == 0 {
            assert!(
                selected.contains(&s),
                "slot {s} changed but is not in mlm_index"
            );
        }
    }
    for f in 0..b {
        rates.flows += 1;
        rates.swapped += swap[f] as usize;
        let long = real(f) > 3;
        for k in 0..n {
            let at = f * n + k;
            let m = mu[at];
            assert!(m == 0.0 || m == 1.0);
            if !long {
                assert_eq!(m, 0.0, "μ only in flows of more than 3 bursts (flow {f})");
            }
            if swapped[f] == Some(k) {
                assert_eq!(m, 0.0, "no metadata mask on the swapped burst");
            }
            // Masked metadata is zeroed; the rest, the swapped burst's included, is the
            // original burst's.
            let want: Vec<f32> = if m == 1.0 {
                vec![0.0; 4]
            } else {
                orig_meta[at * 4..at * 4 + 4].to_vec()
            };
            assert_eq!(&meta[at * 4..at * 4 + 4], &want[..], "flow {f} burst {k}");
            // Targets: the unmasked values, [iat s, kB, packets].
            let o = &orig_meta[at * 4..at * 4 + 4];
            assert_eq!(
                &targets[at * 3..at * 3 + 3],
                &[
                    (o[3] as f64 / 1000.0) as f32,
                    (o[1] as f64 / 1000.0) as f32,
                    o[2]
                ]
            );
            let d = if m == 1.0 && k < real(f) {
                (o[0] > 0.0) as i64
            } else {
                -100
            };
            assert_eq!(direction[at], d, "direction label of flow {f} burst {k}");
            if long && swapped[f] != Some(k) && (swap[f] == 0 || swapped[f].is_some()) {
                rates.meta_slots += 1;
                rates.meta_masked += m as usize;
            }
        }
        // MLM-eligible slots: the field slots of the unswapped real bursts.
        if swap[f] == 0 || swapped[f].is_some() {
            for k in 0..real(f) {
                if swapped[f] == Some(k) {
                    continue;
                }
                let row = (f * n + k) * l;
                let eligible = (1..l).filter(|&j| orig[row + j] != 0).count();
                rates.mlm_slots += eligible;
                rates.mlm_selected += index
                    .iter()
                    .filter(|&&i| (i as usize) / l == f * n + k)
                    .count();
            }
        }
    }
}

#[test]
fn pretraining_corruptions_follow_netfound() {
    let flows = arrow_flows();
    let refs: Vec<&TokenizedFlow> = flows.iter().collect();
    let cfg = model_config();
    let lay = Layout::of(&cfg, DType::F32);
    let nf = lay.netfound.clone().expect("netFound layout");
    assert_eq!((nf.swap_rate, nf.mlm_probability), (0.5, 0.3));
    // Seeded: the same seed, the same batch; the entry point takes netFound's rates
    // whatever the Masking says.
    let a = netfound_pretrain_batch(&refs, &nf, &mut SplitMix64(11));
    let odd = Masking {
        swap_prob: 0.0,
        mlm_prob: 0.0,
        meta_mask_prob: 0.0,
        ..Masking::default()
    };
    assert_eq!(pretrain_batch(&refs, &lay, &odd, &mut SplitMix64(11)), a);
    assert_ne!(netfound_pretrain_batch(&refs, &nf, &mut SplitMix64(12)), a);
    let mut rates = Rates::default();
    let mut seeds = SplitMix64(2024);
    for padding in [NetfoundPadding::Canonical, NetfoundPadding::Batch] {
        let nf = NetfoundLayout {
            padding,
            ..nf.clone()
        };
        let plain = netfound_inference_batch(&refs, &nf);
        for _ in 0..150 {
            let batch = netfound_pretrain_batch(&refs, &nf, &mut SplitMix64(seeds.next_u64()));
            check_pretrain(&batch, &plain, &flows, &mut rates);
        }
    }
    let frac = |a: usize, b: usize| a as f64 / b as f64;
    // 3600 flows, ~20k metadata slots, ~130k MLM slots: the bounds are over 5 standard
    // deviations (and the seeds are fixed).
    let swap = frac(rates.swapped, rates.flows);
    let meta = frac(rates.meta_masked, rates.meta_slots);
    let mlm = frac(rates.mlm_selected, rates.mlm_slots);
    let sel = rates.to_mask + rates.to_random + rates.kept;
    let (to_mask, to_random) = (frac(rates.to_mask, sel), frac(rates.to_random, sel));
    eprintln!("{rates:?}: swap {swap:.4} meta {meta:.4} mlm {mlm:.4} mask {to_mask:.4} random {to_random:.4}");
    assert!((swap - 0.5).abs() < 0.05, "swap rate {swap}");
    assert!((meta - 0.3).abs() < 0.02, "metadata mask rate {meta}");
    assert!((mlm - 0.3).abs() < 0.01, "MLM rate {mlm}");
    assert!((to_mask - 0.8).abs() < 0.01, "MASK share {to_mask}");
    assert!((to_random - 0.1).abs() < 0.01, "random share {to_random}");
    assert!(
        rates.meta_slots > 10_000 && rates.mlm_slots > 50_000,
        "{rates:?}"
    );
}

#[test]
fn unsupported_flows_are_reported_and_cuts_counted() {
    let flows = arrow_flows();
    // Every row netFound wrote is one it can take…
    let dir = conformance_dir().join("arrow");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("arrow dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "arrow"))
        .collect();
    files.sort();
    let mut rows = 0;
    for path in &files {
        for f in arrow_file(path.file_name().unwrap().to_str().unwrap()) {
            assert_eq!(netfound_unsupported(&f), None, "{}", path.display());
            rows += 1;
        }
    }
    assert!(rows > 50, "{rows} rows");
    // …but not the rows of the TCP-options run (38 tokens per TCP packet).
    let tcpopt = conformance_dir().join("arrow_tcpopt/zeek_tcp_options.arrow");
    let opt: Vec<TokenizedFlow> = DatasetReader::open(&tcpopt)
        .expect("tcpopt arrow")
        .map(|r| r.expect("row").flow)
        .filter(|f| f.protocol == 6)
        .collect();
    assert!(!opt.is_empty());
    assert!(opt.iter().all(|f| netfound_unsupported(f).is_some()));
    // Another protocol: reported, and laid out as a flow without bursts if fed anyway.
    let mut icmp6 = flows[4].clone();
    icmp6.protocol = 58;
    assert!(netfound_unsupported(&icmp6).unwrap().contains("protocol"));
    let lay = layout(NetfoundPadding::Batch);
    let b = netfound_inference_batch(&[&flows[4], &icmp6], &lay);
    assert_eq!(b.unsupported, 1);
    assert_eq!(b.bursts, flows[4].bursts.len());
    assert_eq!(ints(&b, "protocol"), &[17, 0]);
    let half = ints(&b, "input_ids").len() / 2;
    assert!(ints(&b, "input_ids")[half..].iter().all(|&i| i == 0));
    // Cuts: flow 0 has 12 bursts; 14 are cut to 12. A 7-packet TCP burst has 84 stripped
    // tokens: 12 cut.
    let mut long = flows[0].clone();
    let extra: Vec<_> = long
        .bursts_with_tokens()
        .take(2)
        .map(|(b, t)| (b.clone(), t.to_vec()))
        .collect();
    for (burst, tokens) in extra {
        long.push_burst(burst, &tokens);
    }
    assert_eq!(long.bursts.len(), 14);
    let (burst, tokens) = flows[..4]
        .iter()
        .flat_map(|f| f.bursts_with_tokens())
        .find(|(b, _)| b.count == 6)
        .map(|(b, t)| (b.clone(), t.to_vec()))
        .expect("a 6-packet burst");
    let mut wide = TokenizedFlow {
        tokens: Vec::new(),
        bursts: Vec::new(),
        ..flows[0].clone()
    };
    let mut seven = tokens.clone();
    seven.extend_from_slice(&tokens[..18]);
    wide.push_burst(netfm_tokenizer::Burst { count: 7, ..burst }, &seven);
    for padding in [NetfoundPadding::Batch, NetfoundPadding::Canonical] {
        let b = netfound_inference_batch(&[&long, &wide], &layout(padding));
        assert_eq!((b.cut_bursts, b.cut_tokens), (2, 12), "{padding:?}");
        assert_eq!(b.get("input_ids").unwrap().dims, vec![2, 12, 73]);
        assert_eq!(b.bursts, 13);
        let mask = ints(&b, "attention_mask");
        assert_eq!(mask[12 * 73..13 * 73].iter().sum::<i64>(), 73);
    }
}
