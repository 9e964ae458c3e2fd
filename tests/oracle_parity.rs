//! Oracle parity: netfm's packet decoder against two independent references.
//!
//! 1. tshark (`-T fields`) on every packet of the bundled captures (`datasets/pcaps`): every
//!    header field netfm tokenizes or keys flows on must equal tshark's value. The few
//!    differences are listed, with their reason, in [`compare_with_tshark`]; anything else
//!    fails the test. tshark is required: the test fails (does not skip) without it.
//! 2. netFound's own stage-3 records (`intermediate_extracted/` in the conformance set):
//!    every packet record netFound wrote must be produced, field for field, by netfm's
//!    decoder from the same capture.

use netfm::capture::{CaptureReader, Input};
use netfm::decode::{decode_frame, DecodeOptions, DecodedPacket, IcmpKind, SkipReason};
use netfm_tokenizer::L4Fields;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::conformance_dir;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled captures: `datasets/pcaps`, or the shared copy next to the project.
fn datasets_dir() -> PathBuf {
    let local = manifest_dir().join("datasets/pcaps");
    if local.is_dir() {
        return local;
    }
    let shared = manifest_dir().join("../shared/datasets/pcaps");
    assert!(
        shared.is_dir(),
        "bundled captures not found in {} or {}",
        local.display(),
        shared.display()
    );
    shared
}

fn is_capture_name(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    [".pcap", ".pcapng", ".pcap.gz", ".pcapng.gz"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

fn captures_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| is_capture_name(p))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no captures in {}", dir.display());
    files
}

/// Every frame of a capture, decoded.
fn decode_all(path: &Path) -> Vec<Result<DecodedPacket, SkipReason>> {
    let mut reader = CaptureReader::open(&Input::File(path.to_path_buf()))
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut out = Vec::new();
    while let Some(frame) = reader.next_frame() {
        out.push(decode_frame(&frame, &DecodeOptions::INNER));
    }
    assert!(
        reader.warning().is_none(),
        "{}: {:?}",
        path.display(),
        reader.warning()
    );
    out
}

// ---------------------------------------------------------------------------------------
// tshark
// ---------------------------------------------------------------------------------------

const TSHARK_FIELDS: &[&str] = &[
    "frame.number",
    "ip.hdr_len",
    "ip.dsfield",
    "ip.len",
    "ip.flags",
    "ip.frag_offset",
    "ip.ttl",
    "ip.proto",
    "ip.src",
    "ip.dst",
    "ipv6.tclass",
    "ipv6.plen",
    "ipv6.hlim",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.window_size_value",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.urgent_pointer",
    "tcp.hdr_len",
    "tcp.options",
    "tcp.payload",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "udp.payload",
    "icmp.type",
    "icmp.code",
    "icmp.ident",
    "icmpv6.type",
    "icmpv6.code",
    "icmpv6.echo.identifier",
];

/// One tshark row: field name -> its occurrences, outermost first (ICMP errors quote a
/// second IP header and a transport header, which tshark reports as further occurrences).
type Row = HashMap<&'static str, Vec<String>>;

fn tshark_rows(path: &Path) -> Vec<Row> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(path);
    // Per-packet view: no reassembly, so every frame shows its own headers.
    for pref in [
        "ip.defragment:FALSE",
        "ipv6.defragment:FALSE",
        "tcp.desegment_tcp_streams:FALSE",
    ] {
        cmd.arg("-o").arg(pref);
    }
    cmd.args([
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=;",
        "-E",
        "quote=n",
    ]);
    for f in TSHARK_FIELDS {
        cmd.arg("-e").arg(f);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("tshark is required for the oracle parity test (apt-get install -y tshark): {e}")
    });
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("tshark output is UTF-8");
    text.lines()
        .map(|line| {
            let cols: Vec<&str> = line.split('|').collect();
            assert_eq!(
                cols.len(),
                TSHARK_FIELDS.len(),
                "unexpected tshark line: {line}"
            );
            TSHARK_FIELDS
                .iter()
                .zip(cols)
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (*k, v.split(';').map(str::to_string).collect()))
                .collect()
        })
        .collect()
}

fn num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("not a number: {s:?}: {e}"))
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// Field `name`, occurrence `i`, as a number.
fn nth(row: &Row, name: &str, i: usize) -> Option<u64> {
    row.get(name).and_then(|v| v.get(i)).map(|s| num(s))
}

fn first(row: &Row, name: &str) -> Option<u64> {
    nth(row, name, 0)
}

fn addr(row: &Row, name: &str, i: usize) -> Option<IpAddr> {
    row.get(name)
        .and_then(|v| v.get(i))
        .map(|s| s.parse().expect("address"))
}

/// The 12 leading bytes of a hex byte field, zero padded, as netFound keeps them.
fn leading12(row: &Row, name: &str) -> [u8; 12] {
    let mut out = [0u8; 12];
    if let Some(v) = row.get(name).and_then(|v| v.first()) {
        let b = hex_bytes(v);
        let n = b.len().min(12);
        out[..n].copy_from_slice(&b[..n]);
    }
    out
}

#[derive(Default)]
struct Diffs(Vec<String>);

impl Diffs {
    fn num(&mut self, what: &str, ours: u64, theirs: Option<u64>) {
        if theirs != Some(ours) {
            self.0
                .push(format!("{what}: netfm {ours}, tshark {theirs:?}"));
        }
    }

    fn push(&mut self, diff: String) {
        self.0.push(diff);
    }
}

/// Compares one decoded frame with tshark's row; returns the differences found.
fn compare_with_tshark(decoded: &Result<DecodedPacket, SkipReason>, row: &Row) -> Vec<String> {
    let mut diffs = Diffs::default();
    let has_v4 = row.contains_key("ip.src");
    let has_v6 = row.contains_key("ipv6.src");
    let p = match decoded {
        Ok(p) => p,
        Err(reason) => {
            let expected = if !has_v4 && !has_v6 {
                // ARP, LLDP, STP...: no IP layer for tshark either.
                SkipReason::NotIp
            } else if first(row, "ip.frag_offset").unwrap_or(0) != 0 {
                SkipReason::IpFragment
            } else {
                // Any other skip must be justified by a transport netfm does not tokenize,
                // which tshark then shows no TCP/UDP/ICMP fields for.
                let tokenized = ["tcp.srcport", "udp.srcport", "icmp.type", "icmpv6.type"];
                if tokenized.iter().any(|f| row.contains_key(f)) {
                    return vec![format!(
                        "netfm skipped ({reason:?}) a packet tshark decodes"
                    )];
                }
                SkipReason::UnsupportedTransport
            };
            if *reason != expected {
                diffs.push(format!("skip reason {reason:?}, expected {expected:?}"));
            }
            return diffs.0;
        }
    };
    let f = &p.fields;
    match (p.src, p.dst) {
        (IpAddr::V4(_), _) => {
            assert!(has_v4, "netfm decoded IPv4 where tshark has none");
            diffs.num(
                "ip header length",
                f.ip_header_len.into(),
                first(row, "ip.hdr_len"),
            );
            // tshark names the TOS byte "dsfield" (DSCP << 2 | ECN): the same 8 bits.
            diffs.num("tos", f.tos.into(), first(row, "ip.dsfield"));
            diffs.num("total length", f.total_len.into(), first(row, "ip.len"));
            // tshark's ip.flags is the 3-bit field (DF = 0x02), netFound's value too.
            diffs.num("ip flags", f.ip_flags.into(), first(row, "ip.flags"));
            diffs.num("ttl", f.ttl.into(), first(row, "ip.ttl"));
            if Some(p.src) != addr(row, "ip.src", 0) || Some(p.dst) != addr(row, "ip.dst", 0) {
                diffs.push(format!(
                    "addresses {} -> {} differ from tshark's",
                    p.src, p.dst
                ));
            }
        }
        (IpAddr::V6(_), _) => {
            assert!(has_v6, "netfm decoded IPv6 where tshark has none");
            // tshark has no "header length" for IPv6; netFound writes the fixed 40.
            diffs.num("ipv6 header length", f.ip_header_len.into(), Some(40));
            diffs.num("traffic class", f.tos.into(), first(row, "ipv6.tclass"));
            // netFound's IPv6 "total length" is the payload length plus the 40-byte header.
            diffs.num(
                "total length",
                f.total_len.into(),
                first(row, "ipv6.plen").map(|l| (l + 40) & 0xffff),
            );
            diffs.num("ip flags", f.ip_flags.into(), Some(0));
            diffs.num("hop limit", f.ttl.into(), first(row, "ipv6.hlim"));
            if Some(p.src) != addr(row, "ipv6.src", 0) || Some(p.dst) != addr(row, "ipv6.dst", 0) {
                diffs.push(format!(
                    "addresses {} -> {} differ from tshark's",
                    p.src, p.dst
                ));
            }
        }
    }
    match f.l4 {
        L4Fields::Tcp {
            flags,
            window,
            seq,
            ack,
            urgent,
            options,
        } => {
            diffs.num("tcp src port", p.src_port.into(), first(row, "tcp.srcport"));
            diffs.num("tcp dst port", p.dst_port.into(), first(row, "tcp.dstport"));
            // tshark's tcp.flags has 12 bits; netFound keeps CWR..FIN and drops NS and the
            // reserved bits, so compare the low byte.
            diffs.num(
                "tcp flags",
                flags.into(),
                first(row, "tcp.flags").map(|v| v & 0xff),
            );
            diffs.num(
                "tcp window",
                window.into(),
                first(row, "tcp.window_size_value"),
            );
            diffs.num("tcp seq", seq.into(), first(row, "tcp.seq_raw"));
            diffs.num("tcp ack", ack.into(), first(row, "tcp.ack_raw"));
            diffs.num(
                "tcp urgent",
                urgent.into(),
                first(row, "tcp.urgent_pointer"),
            );
            let mut want = [0u8; 40];
            if let Some(v) = row.get("tcp.options").and_then(|v| v.first()) {
                let b = hex_bytes(v);
                want[..b.len().min(40)].copy_from_slice(&b[..b.len().min(40)]);
            }
            if options != want {
                diffs.push(format!("tcp options {options:02x?} vs tshark {want:02x?}"));
            }
            if !p.l4_truncated && f.payload != leading12(row, "tcp.payload") {
                diffs.push(format!("tcp payload {:02x?} vs tshark", f.payload));
            }
        }
        L4Fields::Udp { length } => {
            diffs.num("udp src port", p.src_port.into(), first(row, "udp.srcport"));
            diffs.num("udp dst port", p.dst_port.into(), first(row, "udp.dstport"));
            diffs.num("udp length", length.into(), first(row, "udp.length"));
            if f.payload != leading12(row, "udp.payload") {
                diffs.push(format!("udp payload {:02x?} vs tshark", f.payload));
            }
        }
        L4Fields::Icmp { icmp_type, code } => {
            let (t, c, ident, ip_src, ip_dst) = if p.protocol == 58 {
                (
                    "icmpv6.type",
                    "icmpv6.code",
                    "icmpv6.echo.identifier",
                    "ipv6.src",
                    "ipv6.dst",
                )
            } else {
                ("icmp.type", "icmp.code", "icmp.ident", "ip.src", "ip.dst")
            };
            diffs.num("icmp type", icmp_type.into(), first(row, t));
            diffs.num("icmp code", code.into(), first(row, c));
            match p.icmp {
                Some(IcmpKind::Echo { identifier, .. }) => {
                    diffs.num("echo identifier", identifier.into(), first(row, ident))
                }
                // The quoted packet: tshark lists its IP header as the second occurrence of
                // the IP fields and its ports as the only TCP/UDP occurrence.
                Some(IcmpKind::Error {
                    src,
                    dst,
                    protocol,
                    src_port,
                    dst_port,
                }) => {
                    if Some(src) != addr(row, ip_src, 1) || Some(dst) != addr(row, ip_dst, 1) {
                        diffs.push(format!(
                            "quoted addresses {src} -> {dst} differ from tshark's"
                        ));
                    }
                    if p.protocol == 1 {
                        diffs.num("quoted protocol", protocol.into(), nth(row, "ip.proto", 1));
                    }
                    let (sp, dp) = match protocol {
                        6 => (first(row, "tcp.srcport"), first(row, "tcp.dstport")),
                        17 => (first(row, "udp.srcport"), first(row, "udp.dstport")),
                        _ => (Some(0), Some(0)),
                    };
                    diffs.num("quoted src port", src_port.into(), sp);
                    diffs.num("quoted dst port", dst_port.into(), dp);
                }
                Some(IcmpKind::Other) => {}
                None => diffs.push("ICMP packet without IcmpKind".into()),
            }
        }
    }
    diffs.0
}

#[test]
fn decode_matches_tshark_on_every_bundled_packet() {
    let mut failures = Vec::new();
    let mut packets = 0usize;
    let mut decoded = 0usize;
    for path in captures_in(&datasets_dir()) {
        let ours = decode_all(&path);
        let theirs = tshark_rows(&path);
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{}: frame count differs from tshark",
            path.display()
        );
        for (i, (d, row)) in ours.iter().zip(&theirs).enumerate() {
            packets += 1;
            decoded += usize::from(d.is_ok());
            for diff in compare_with_tshark(d, row) {
                failures.push(format!("{} frame {}: {diff}", path.display(), i + 1));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences from tshark:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        packets > 1000 && decoded * 10 > packets * 9,
        "{decoded} of {packets} packets decoded"
    );
    eprintln!("tshark parity: {packets} packets, {decoded} decoded, all fields equal");
}

// ---------------------------------------------------------------------------------------
// netFound stage-3 records
// ---------------------------------------------------------------------------------------

/// One packet record of netFound's 3_field_extraction output (little-endian, fixed size).
#[derive(Debug, Clone, PartialEq, Eq)]
struct StageThreeRecord {
    ts_ns: u64,
    ip_header_len: u8,
    tos: u8,
    total_len: u16,
    ip_flags: u8,
    ttl: u8,
    src32: u32,
    dst32: u32,
    /// TCP: sport, dport, flags, window, rel seq, rel ack, urgent; UDP: sport, dport, length;
    /// ICMP: type, code.
    l4: Vec<u64>,
    payload: [u8; 12],
}

fn parse_records(bytes: &[u8]) -> (u8, Vec<StageThreeRecord>) {
    let proto = bytes[0];
    let size = match proto {
        6 => 51,
        17 => 40,
        1 => 36,
        p => panic!("unexpected protocol byte {p}"),
    };
    let rest = &bytes[1..];
    assert_eq!(rest.len() % size, 0, "partial record");
    let u16le = |b: &[u8], at: usize| u64::from(u16::from_le_bytes([b[at], b[at + 1]]));
    let u32le = |b: &[u8], at: usize| {
        u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
    };
    let records = rest
        .chunks_exact(size)
        .map(|r| {
            let l4 = match proto {
                6 => vec![
                    u16le(r, 22),
                    u16le(r, 24),
                    u64::from(r[26]),
                    u16le(r, 27),
                    u32le(r, 29),
                    u32le(r, 33),
                    u16le(r, 37),
                ],
                17 => vec![u16le(r, 22), u16le(r, 24), u16le(r, 26)],
                _ => vec![u64::from(r[22]), u64::from(r[23])],
            };
            StageThreeRecord {
                ts_ns: u64::from_le_bytes(r[0..8].try_into().expect("8 bytes")),
                ip_header_len: r[8],
                tos: r[9],
                total_len: u16::from_le_bytes([r[10], r[11]]),
                ip_flags: r[12],
                ttl: r[13],
                src32: u32::from_le_bytes(r[14..18].try_into().expect("4 bytes")),
                dst32: u32::from_le_bytes(r[18..22].try_into().expect("4 bytes")),
                l4,
                payload: r[size - 12..].try_into().expect("12 bytes"),
            }
        })
        .collect();
    (proto, records)
}

/// netFound keeps the first 32 bits of an address.
fn first32(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => u32::from_be_bytes(v6.octets()[..4].try_into().expect("4 bytes")),
    }
}

/// What netFound's stage 3 would write for this packet, with TCP seq/ack still absolute.
fn as_record(p: &DecodedPacket) -> StageThreeRecord {
    let f = &p.fields;
    let l4 = match f.l4 {
        L4Fields::Tcp {
            flags,
            window,
            seq,
            ack,
            urgent,
            ..
        } => vec![
            p.src_port.into(),
            p.dst_port.into(),
            flags.into(),
            window.into(),
            seq.into(),
            ack.into(),
            urgent.into(),
        ],
        L4Fields::Udp { length } => vec![p.src_port.into(), p.dst_port.into(), length.into()],
        L4Fields::Icmp { icmp_type, code } => vec![icmp_type.into(), code.into()],
    };
    StageThreeRecord {
        // PcapSplitter rewrites captures with microsecond timestamps.
        ts_ns: p.ts_ns / 1000 * 1000,
        ip_header_len: f.ip_header_len,
        tos: f.tos,
        total_len: f.total_len,
        ip_flags: f.ip_flags,
        ttl: f.ttl,
        src32: first32(p.src),
        dst32: first32(p.dst),
        l4,
        payload: f.payload,
    }
}

/// netFound's relative seq/ack over one flow file, in record order (README, stage 3):
/// abs_seq = seq of packet 0; abs_ack = ack of packet 0, or, if that is 0, seq of packet 1
/// once it is seen; initiator packets subtract (abs_seq, abs_ack) with ack 0 while abs_ack
/// is 0, the others (abs_ack, abs_seq).
fn make_relative(records: &mut [StageThreeRecord]) {
    let Some(first) = records.first() else { return };
    let initiator = first.src32;
    let abs_seq = first.l4[4] as u32;
    let mut abs_ack = first.l4[5] as u32;
    for (i, r) in records.iter_mut().enumerate() {
        let (seq, ack) = (r.l4[4] as u32, r.l4[5] as u32);
        if i == 1 && abs_ack == 0 {
            abs_ack = seq;
        }
        let (seq, ack) = if r.src32 == initiator {
            (
                seq.wrapping_sub(abs_seq),
                if abs_ack == 0 {
                    0
                } else {
                    ack.wrapping_sub(abs_ack)
                },
            )
        } else {
            (seq.wrapping_sub(abs_ack), ack.wrapping_sub(abs_seq))
        };
        r.l4[4] = seq.into();
        r.l4[5] = ack.into();
    }
}

#[test]
fn decode_reproduces_netfound_stage_three_records() {
    let conf = conformance_dir();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(conf.join("intermediate_extracted"))
        .expect("intermediate_extracted")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    let mut failures = Vec::new();
    let mut matched = 0usize;
    for dir in dirs {
        let stem = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        let capture = ["pcap", "pcapng"]
            .iter()
            .map(|ext| conf.join("pcaps").join(format!("{stem}.{ext}")))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no capture for {stem}"));
        let mut reader = CaptureReader::open(&Input::File(capture.clone())).expect("open");
        let mut candidates: Vec<DecodedPacket> = Vec::new();
        while let Some(frame) = reader.next_frame() {
            if let Ok(p) = decode_frame(&frame, &DecodeOptions::NETFOUND) {
                candidates.push(p);
            }
        }
        let mut used = vec![false; candidates.len()];
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for file in files {
            let (proto, theirs) = parse_records(&std::fs::read(&file).expect("read"));
            // Find, for each record, the decoded packet with the same time, addresses and
            // (for TCP) everything but seq/ack; duplicates are matched in capture order.
            let mut ours: Vec<StageThreeRecord> = Vec::new();
            for rec in &theirs {
                let found = candidates.iter().enumerate().position(|(i, p)| {
                    let mut r = as_record(p);
                    if proto == 6 && r.l4.len() == 7 {
                        r.l4[4] = rec.l4[4];
                        r.l4[5] = rec.l4[5];
                    }
                    !used[i] && p.protocol == proto && r == *rec
                });
                match found {
                    Some(i) => {
                        used[i] = true;
                        ours.push(as_record(&candidates[i]));
                    }
                    None => failures.push(format!(
                        "{}: no decoded packet matches {rec:?}",
                        file.display()
                    )),
                }
            }
            if proto == 6 && ours.len() == theirs.len() {
                make_relative(&mut ours);
                for (o, t) in ours.iter().zip(&theirs) {
                    if o.l4[4..6] != t.l4[4..6] {
                        failures.push(format!(
                            "{}: relative seq/ack {:?} vs {:?}",
                            file.display(),
                            &o.l4[4..6],
                            &t.l4[4..6]
                        ));
                    }
                }
            }
            matched += ours.len();
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(matched > 2000, "only {matched} records compared");
    eprintln!("netFound stage-3 parity: {matched} records equal");
}
