//! netFound conformance: netfm's netFound mode against the golden outputs of netFound's own
//! pipeline (`../shared/conformance/netfound`, or `NETFM_CONFORMANCE_DIR`).
//!
//! - `stage3_to_stage4_*`: netFound's own stage-3 binaries (`intermediate_extracted/`) pushed
//!   through netfm's tokenizer, compared with `jsonl/` (validates burst layout, direction and
//!   tokens independently of capture/decode).
//! - `end_to_end_*`: each capture in `pcaps/` through netfm's capture reader, decoder and
//!   netFound-mode assembler, compared with `jsonl/` and `jsonl_tcpopt/` (rows order-free,
//!   flow counts equal), for the 36 captures netFound produced output for; and what netfm
//!   does with the 15 captures netFound fails on (docs/netfound-compat.md).
//! - `netfound_ipc_*`: netfm's Arrow IPC writer read back by Python pyarrow and compared
//!   with netFound's own Arrow file.
//!
//! The data is required: a missing directory fails the tests, it never skips them.

use netfm::capture::{CaptureReader, Input};
use netfm::dataset::netfound_ipc::NetfoundIpcWriter;
use netfm::decode::{decode_frame, DecodeOptions};
use netfm::flow::netfound::{reason as netfound_reason, NetfoundAssembler};
use netfm::flow::{FlowAssembler, FlowRecord, FlowStats};
use netfm_tokenizer::burst::{BurstConfig, FlowTokenizer};
use netfm_tokenizer::direction::{InternalNetworks, NetfoundDirection};
use netfm_tokenizer::fields::{
    L4Fields, PacketFields, TokenLayout, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
use netfm_tokenizer::TokenizedFlow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

mod common;
use common::conformance_dir;

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
            burst_tokens: flow.bursts_with_tokens().map(|(_, t)| t.to_vec()).collect(),
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
                v[k].as_array()
                    .expect(k)
                    .iter()
                    .map(|x| x.as_u64().expect("unsigned"))
                    .collect()
            };
            Row {
                flow_duration: v["flow_duration"].as_u64().expect("flow_duration"),
                burst_tokens: v["burst_tokens"]
                    .as_array()
                    .expect("burst_tokens")
                    .iter()
                    .map(|b| {
                        b.as_array()
                            .expect("burst")
                            .iter()
                            .map(|t| t.as_u64().expect("token") as u16)
                            .collect()
                    })
                    .collect(),
                directions: v["directions"]
                    .as_array()
                    .expect("directions")
                    .iter()
                    .map(|d| d.as_bool().expect("bool"))
                    .collect(),
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
                let options = if tcp_options {
                    c.take::<40>()?
                } else {
                    [0; 40]
                };
                L4Fields::Tcp {
                    flags,
                    window,
                    seq,
                    ack,
                    urgent,
                    options,
                }
            }
            PROTO_UDP => {
                let _ports = (c.u16()?, c.u16()?);
                L4Fields::Udp { length: c.u16()? }
            }
            PROTO_ICMP => L4Fields::Icmp {
                icmp_type: c.u8()?,
                code: c.u8()?,
            },
            _ => return None,
        };
        let payload = c.take::<12>()?;
        out.push(Stage3Record {
            ts_ns,
            src,
            dst,
            fields: PacketFields {
                ip_header_len,
                tos,
                total_len,
                ip_flags,
                ttl,
                l4,
                payload,
            },
        });
    }
    Some((protocol, out))
}

/// Stage 4 on one flow file's records: direction, bursts, tokens. None when netFound drops
/// the flow (more than two addresses).
fn tokenize_stage3(
    protocol: u8,
    records: &[Stage3Record],
    cfg: &BurstConfig,
) -> Option<TokenizedFlow> {
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
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".jsonl"))
                .map(str::to_string)
        })
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
            let Some((protocol, records)) = parse_stage3(&bytes, false) else {
                continue;
            };
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
            failures.insert(
                stem.clone(),
                format!("got {} rows, want {}", rows.len(), want.len()),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "stage 3 -> 4 mismatches: {failures:#?}"
    );
    assert!(total_rows >= 36);
}

#[test]
fn stage3_layout_is_the_default_token_layout() {
    // The intermediate files are the no-options run: 18 tokens per TCP packet.
    assert_eq!(TokenLayout::default().tokens_per_packet(PROTO_TCP), 18);
}

/// What netfm's netFound mode makes of one capture.
struct CaptureRun {
    frames: u64,
    decoded: u64,
    rows: Vec<Row>,
    flows: Vec<FlowRecord>,
    stats: FlowStats,
}

fn capture_path(dir: &Path, stem: &str) -> PathBuf {
    ["pcap", "pcapng"]
        .iter()
        .map(|ext| dir.join("pcaps").join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no capture for {stem} in {}/pcaps", dir.display()))
}

fn run_netfound_mode(path: &Path, tcp_options: bool) -> CaptureRun {
    let mut bursts = BurstConfig::default();
    bursts.layout.tcp_options = tcp_options;
    let mut asm = NetfoundAssembler::new(bursts, InternalNetworks::netfound_default());
    let mut flows = Vec::new();
    let (mut frames, mut decoded) = (0, 0);
    // A capture that cannot be opened at all reads as 0 frames (see NETFOUND_FAILS).
    if let Ok(mut reader) = CaptureReader::open(&Input::File(path.to_path_buf())) {
        while let Some(frame) = reader.next_frame() {
            frames += 1;
            if let Ok(pkt) = decode_frame(&frame, &DecodeOptions::NETFOUND) {
                decoded += 1;
                asm.push(&pkt, &mut flows);
            }
        }
    }
    asm.end_of_file(&mut flows);
    let mut rows: Vec<Row> = flows.iter().map(|f| Row::of(&f.tokens)).collect();
    rows.sort();
    CaptureRun {
        frames,
        decoded,
        rows,
        flows,
        stats: asm.stats().clone(),
    }
}

fn end_to_end(golden: &str, tcp_options: bool) {
    let dir = conformance_dir();
    let stems = stems_with_output(&dir, golden);
    assert_eq!(
        stems.len(),
        36,
        "expected 36 captures with netFound output in {golden}/"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).expect("summary.json"))
            .expect("json");
    let variant = if tcp_options { "tcpopt" } else { "notcpopt" };
    let mut failures = BTreeMap::new();
    for stem in &stems {
        let run = run_netfound_mode(&capture_path(&dir, stem), tcp_options);
        // Packets netFound's 1_filter kept = packets netfm's netFound mode kept.
        let entry = summary
            .as_array()
            .expect("summary list")
            .iter()
            .find(|e| {
                e["variant"] == variant
                    && e["file"]
                        .as_str()
                        .and_then(|f| f.rsplit_once('.'))
                        .map(|(s, _)| s)
                        == Some(stem.as_str())
            })
            .unwrap_or_else(|| panic!("{stem} not in summary.json"));
        let filter_dropped: u64 = run
            .stats
            .packets_dropped
            .iter()
            .filter(|(reason, _)| **reason != netfound_reason::AFTER_PROTOCOL_CHANGE)
            .map(|(_, n)| n)
            .sum();
        let kept = run.decoded - filter_dropped;
        if Some(kept) != entry["after_1_filter_packets"].as_u64() {
            failures.insert(
                format!("{stem} (1_filter)"),
                format!(
                    "netfm kept {kept} packets, netFound's 1_filter {}",
                    entry["after_1_filter_packets"]
                ),
            );
        }
        let want = golden_rows(&dir.join(golden).join(format!("{stem}.jsonl")));
        if run.rows != want {
            let first_diff = run.rows.iter().zip(&want).position(|(a, b)| a != b);
            let show = |r: Option<&Row>| format!("{r:?}").chars().take(700).collect::<String>();
            let detail = first_diff.map(|i| {
                format!(
                    "\n  got  {}\n  want {}",
                    show(run.rows.get(i)),
                    show(want.get(i))
                )
            });
            failures.insert(
                stem.clone(),
                format!(
                    "got {} flows, want {}; stats {:?}{}",
                    run.rows.len(),
                    want.len(),
                    run.stats,
                    detail.unwrap_or_default()
                ),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 36 captures differ from {golden}/: {failures:#?}",
        failures.len()
    );
}

#[test]
fn end_to_end_default_config_matches_golden_rows() {
    end_to_end("jsonl", false);
}

#[test]
fn end_to_end_tcp_options_config_matches_golden_rows() {
    end_to_end("jsonl_tcpopt", true);
}

/// The 15 captures netFound's pipeline fails on (its summary.json), with what netfm does
/// instead: (stem, frames read, packets decoded, flows). Kept in sync with the table in
/// docs/netfound-compat.md.
const NETFOUND_FAILS: [(&str, u64, u64, usize); 15] = [
    ("malformed_libpcap_invalid_version_2", 1, 1, 1),
    ("malformed_tcpdump_bad_ipv4_version_pgm", 1, 0, 0),
    ("malformed_tcpdump_linktype_ipv4_invalid", 1, 0, 0),
    ("malformed_zeek_ip_bogus_header_len", 1, 0, 0),
    ("pcapparser_test001_be", 4, 4, 2),
    ("tcpdump_linktype_raw_ipv6", 1, 1, 1),
    ("tcpdump_radius_rfc4675_sll", 6, 6, 3),
    ("zeek_communityid_icmp6", 49, 49, 0),
    ("zeek_communityid_sctp", 74, 0, 0),
    ("zeek_icmp6_ping_snap96", 8, 8, 0),
    ("zeek_ipv4_fragmented_1", 3, 2, 0),
    ("zeek_ipv4_fragmented_3", 5, 1, 0),
    ("zeek_snap_tcp", 8, 8, 1),
    ("zeek_tcp_payload_syn_rawip", 6, 6, 1),
    ("zeek_tcp_timeout_with_pings_rawip4", 15, 15, 2),
];

#[test]
fn captures_netfound_fails_on_are_handled() {
    let dir = conformance_dir();
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).expect("summary.json"))
            .expect("json");
    let mut failing: Vec<String> = summary
        .as_array()
        .expect("summary list")
        .iter()
        .filter(|e| e["variant"] == "notcpopt" && e["pipeline_exit"] != "ok")
        .filter_map(|e| e["file"].as_str())
        .map(|f| f.rsplit_once('.').map_or(f, |(s, _)| s).to_string())
        .collect();
    failing.sort();
    let listed: Vec<&str> = NETFOUND_FAILS.iter().map(|e| e.0).collect();
    assert_eq!(failing, listed, "the failing captures of summary.json");
    let mut got = Vec::new();
    for (stem, ..) in NETFOUND_FAILS {
        for tcp_options in [false, true] {
            let run = run_netfound_mode(&capture_path(&dir, stem), tcp_options);
            if !tcp_options {
                got.push((stem, run.frames, run.decoded, run.rows.len()));
            }
            // Whatever netfm makes of them is well formed.
            for r in &run.rows {
                assert!(
                    !r.burst_tokens.is_empty() && r.burst_tokens.len() <= 12,
                    "{stem}"
                );
                assert!(r.counts.iter().all(|&c| (1..=6).contains(&c)), "{stem}");
            }
        }
    }
    assert_eq!(got, NETFOUND_FAILS.to_vec());
}

/// Reads an Arrow IPC stream with pyarrow and prints its rows as sorted compact JSON.
const PYARROW_ROWS: &str = r#"
import json, sys
import pyarrow.ipc as ipc
r = ipc.open_stream(sys.argv[1])
t = r.read_all()
print(json.dumps({"schema": str(t.schema), "fields": [(f.name, str(f.type), f.nullable) for f in t.schema],
                  "rows": sorted(json.dumps(x, separators=(",", ":")) for x in t.to_pylist())}))
"#;

fn pyarrow_rows(path: &Path) -> serde_json::Value {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(PYARROW_ROWS)
        .arg(path)
        .output()
        .expect("python3 with pyarrow is needed for this test (pip install pyarrow)");
    assert!(
        out.status.success(),
        "pyarrow failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("pyarrow output")
}

#[test]
fn netfound_ipc_output_reads_back_in_pyarrow_like_golden_arrow() {
    let dir = conformance_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    for (stem, tcp_options, golden) in [
        ("zeek_wikipedia", false, "arrow"),
        ("netfound_imap", false, "arrow"),
        ("zeek_tcp_options", true, "arrow_tcpopt"),
    ] {
        let run = run_netfound_mode(&capture_path(&dir, stem), tcp_options);
        let path = tmp.path().join(format!("{stem}-{tcp_options}.arrow"));
        let mut w = NetfoundIpcWriter::with_batch_rows(&path, 7).expect("writer");
        for f in &run.flows {
            w.push(&f.tokens, None).expect("push");
        }
        w.finish().expect("finish");
        let ours = pyarrow_rows(&path);
        let theirs = pyarrow_rows(&dir.join(golden).join(format!("{stem}.arrow")));
        assert_eq!(ours["schema"], theirs["schema"], "{stem}: schema");
        assert_eq!(ours["fields"], theirs["fields"], "{stem}: fields");
        assert_eq!(ours["rows"], theirs["rows"], "{stem}: rows");
    }
}
