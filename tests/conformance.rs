//! netFound conformance: netfm's netFound mode against the golden outputs of netFound's own
//! pipeline (`../shared/conformance/netfound`, or `NETFM_CONFORMANCE_DIR`).
//!
//! - `stage3_to_stage4_*`: netFound's own stage-3 binaries (`intermediate_extracted/`) pushed
//!   through netfm's tokenizer, compared with `jsonl/` (validates burst layout, direction and
//!   tokens independently of capture/decode).
//!
//! The data is required: a missing directory fails the tests, it never skips them.

use netfm_tokenizer::burst::{BurstConfig, FlowTokenizer};
use netfm_tokenizer::direction::{InternalNetworks, NetfoundDirection};
use netfm_tokenizer::fields::{L4Fields, PacketFields, TokenLayout, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use netfm_tokenizer::TokenizedFlow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn conformance_dir() -> PathBuf {
    let dir = match std::env::var_os("NETFM_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/netfound"),
    };
    assert!(
        dir.join("summary.json").is_file(),
        "netFound conformance data not found at {} (set NETFM_CONFORMANCE_DIR)",
        dir.display()
    );
    dir
}

/// One golden row, in the schema's field order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    flow_duration: u64,
    burst_tokens: Vec<Vec<u16>>,
    directions: Vec<bool>,
    bytes: Vec<u32>,
    iats: Vec<u64>,
    counts: Vec<u32>,
    protocol: u16,
    labels: Option<String>,
}

impl Row {
    fn of(flow: &TokenizedFlow) -> Row {
        Row {
            flow_duration: flow.flow_duration_us,
            burst_tokens: flow.bursts.iter().map(|b| b.tokens.clone()).collect(),
            directions: flow.bursts.iter().map(|b| b.forward).collect(),
            bytes: flow.bursts.iter().map(|b| b.bytes).collect(),
            iats: flow.bursts.iter().map(|b| b.iat_us).collect(),
            counts: flow.bursts.iter().map(|b| b.count).collect(),
            protocol: u16::from(flow.protocol),
            labels: None,
        }
    }
}

fn golden_rows(path: &Path) -> Vec<Row> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows: Vec<Row> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("golden jsonl row");
            let nums = |k: &str| -> Vec<u64> {
                v[k].as_array().expect(k).iter().map(|x| x.as_u64().expect("unsigned")).collect()
            };
            Row {
                flow_duration: v["flow_duration"].as_u64().expect("flow_duration"),
                burst_tokens: v["burst_tokens"]
                    .as_array()
                    .expect("burst_tokens")
                    .iter()
                    .map(|b| b.as_array().expect("burst").iter().map(|t| t.as_u64().expect("token") as u16).collect())
                    .collect(),
                directions: v["directions"].as_array().expect("directions").iter().map(|d| d.as_bool().expect("bool")).collect(),
                bytes: nums("bytes").into_iter().map(|x| x as u32).collect(),
                iats: nums("iats"),
                counts: nums("counts").into_iter().map(|x| x as u32).collect(),
                protocol: v["protocol"].as_u64().expect("protocol") as u16,
                labels: v["labels"].as_str().map(str::to_string),
            }
        })
        .collect();
    rows.sort();
    rows
}

/// One packet record of a stage-3 flow file (see the conformance README for the layout).
struct Stage3Record {
    ts_ns: u64,
    src: u32,
    dst: u32,
    fields: PacketFields,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.buf.get(self.pos..self.pos + N)?;
        self.pos += N;
        s.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

/// Parses a stage-3 flow file: the protocol byte, then fixed-size little-endian records.
/// None if the file ends inside a record (netFound's Tokenize.py then drops the flow).
fn parse_stage3(bytes: &[u8], tcp_options: bool) -> Option<(u8, Vec<Stage3Record>)> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let protocol = c.u8()?;
    let mut out = Vec::new();
    while c.pos < bytes.len() {
        let ts_ns = c.u64()?;
        let ip_header_len = c.u8()?;
        let tos = c.u8()?;
        let total_len = c.u16()?;
        let ip_flags = c.u8()?;
        let ttl = c.u8()?;
        let src = c.u32()?;
        let dst = c.u32()?;
        let l4 = match protocol {
            PROTO_TCP => {
                let _ports = (c.u16()?, c.u16()?);
                let flags = c.u8()?;
                let window = c.u16()?;
                let seq = c.u32()?;
                let ack = c.u32()?;
                let urgent = c.u16()?;
                let options = if tcp_options { c.take::<40>()? } else { [0; 40] };
                L4Fields::Tcp { flags, window, seq, ack, urgent, options }
            }
            PROTO_UDP => {
                let _ports = (c.u16()?, c.u16()?);
                L4Fields::Udp { length: c.u16()? }
            }
            PROTO_ICMP => L4Fields::Icmp { icmp_type: c.u8()?, code: c.u8()? },
            _ => return None,
        };
        let payload = c.take::<12>()?;
        out.push(Stage3Record {
            ts_ns,
            src,
            dst,
            fields: PacketFields { ip_header_len, tos, total_len, ip_flags, ttl, l4, payload },
        });
    }
    Some((protocol, out))
}

/// Stage 4 on one flow file's records: direction, bursts, tokens. None when netFound drops
/// the flow (more than two addresses).
fn tokenize_stage3(protocol: u8, records: &[Stage3Record], cfg: &BurstConfig) -> Option<TokenizedFlow> {
    let first_src = records.first()?.src;
    let mut dir = NetfoundDirection::new();
    let mut tok = FlowTokenizer::new(cfg, protocol);
    for (i, r) in records.iter().enumerate() {
        dir.observe((r.ts_ns, i as u64), r.src, r.dst);
        tok.push(r.ts_ns, r.src == first_src, &r.fields);
    }
    let forward = dir.resolve(&InternalNetworks::netfound_default()).ok()?;
    Some(tok.finish_with_forward_side(forward == first_src))
}

fn stems_with_output(dir: &Path, sub: &str) -> Vec<String> {
    let mut stems: Vec<String> = fs::read_dir(dir.join(sub))
        .unwrap_or_else(|e| panic!("{}/{sub}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".jsonl")).map(str::to_string))
        .collect();
    stems.sort();
    stems
}

#[test]
fn stage3_to_stage4_matches_golden_rows() {
    let dir = conformance_dir();
    let stems = stems_with_output(&dir, "jsonl");
    assert_eq!(stems.len(), 36, "expected 36 captures with netFound output");
    let cfg = BurstConfig::default();
    let mut failures = BTreeMap::new();
    let mut total_rows = 0;
    for stem in &stems {
        let flow_dir = dir.join("intermediate_extracted").join(stem);
        let mut files: Vec<PathBuf> = fs::read_dir(&flow_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", flow_dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        let mut rows = Vec::new();
        for f in &files {
            let bytes = fs::read(f).expect("stage-3 file");
            let Some((protocol, records)) = parse_stage3(&bytes, false) else { continue };
            if let Some(flow) = tokenize_stage3(protocol, &records, &cfg) {
                if !flow.bursts.is_empty() {
                    rows.push(Row::of(&flow));
                }
            }
        }
        rows.sort();
        let want = golden_rows(&dir.join("jsonl").join(format!("{stem}.jsonl")));
        total_rows += want.len();
        if rows != want {
            failures.insert(stem.clone(), format!("got {} rows, want {}", rows.len(), want.len()));
        }
    }
    assert!(failures.is_empty(), "stage 3 -> 4 mismatches: {failures:#?}");
    assert!(total_rows >= 36);
}

#[test]
fn stage3_layout_is_the_default_token_layout() {
    // The intermediate files are the no-options run: 18 tokens per TCP packet.
    assert_eq!(TokenLayout::default().tokens_per_packet(PROTO_TCP), 18);
}
