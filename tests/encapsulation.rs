//! Tunnelled and encapsulated traffic, end to end: every capture in `datasets/encap/` is
//! tokenized by the built binary and its flows are compared with tshark's dissection.
//!
//! - `--tunnels inner` (the default): every frame whose innermost packet tshark decodes to
//!   TCP, UDP, ICMP or ICMPv6 lands in exactly one flow (the flows' packet counts sum to the
//!   number of such frames), and the flows' 5-tuples are exactly the innermost packets'.
//! - `--tunnels outer`: the same with the outermost IP packet (today's behaviour: a VXLAN
//!   packet is a UDP flow to port 4789, a GRE packet is no flow at all).
//!
//! The innermost packet of a frame, from tshark's layer list (`frame.protocols`): the last
//! IP layer before the first ICMP layer (an ICMP error quotes the packet it is about; that
//! quoted header is not the packet's own) that is directly followed by a transport layer
//! (no other IP layer or GRE between), and that transport. What
//! tshark decodes and netfm does not, or the other way round, would show up as a
//! difference here; there is none in these captures, so no frame is excluded:
//! - Non-first IP fragments: netfm skips them (nothing to tokenize); tshark is run with IP
//!   reassembly off, so it reports them without a transport as well (none occur here).
//! - A UDP tunnel whose inner packet has no transport netfm tokenizes (ARP in VXLAN, ESP in
//!   GTP-U, Teredo bubbles) stays the outer UDP packet in netfm; tshark's innermost
//!   transport for those frames is that same outer UDP header.
//! - Frames with no transport inside (STP/CDP/OSPF/PIM in ERSPAN or GRE, ERSPAN III frame
//!   type 7, PPP LCP in PPTP's GRE and in PPPoE, PPPoE discovery, SLARP over Cisco HDLC,
//!   GRE keepalives) are counted skips in netfm and have no transport in tshark.
//! - `ppp_ip_udp_dns.pcap` is a deliberately damaged PPP frame (control byte 0x5f,
//!   protocol 0x7e08): tshark decodes no IP in it, neither does netfm.
//! - `vxlan_port_8472.pcap` is VXLAN on Linux's port; tshark is told so (`-d`), as netfm
//!   decodes 8472 as VXLAN by default.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::run_ok;

fn encap_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/encap")
}

fn captures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(encap_dir())
        .expect("datasets/encap")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("pcap" | "pcapng")
            )
        })
        .collect();
    files.sort();
    files
}

/// One flow's key as compared here: protocol and the unordered endpoints (ports are left
/// out for ICMP, whose flows netfm keys by echo identifier or quoted ports instead).
type Key = (u8, (String, u16), (String, u16));

fn key(protocol: u8, a: (String, u16), b: (String, u16)) -> Key {
    let (a, b) = if matches!(protocol, 1 | 58) {
        ((a.0, 0), (b.0, 0))
    } else {
        (a, b)
    };
    if a <= b {
        (protocol, a, b)
    } else {
        (protocol, b, a)
    }
}

/// What tshark says: (frames with a transport, their keys), for the innermost and the
/// outermost packet of each frame.
struct Oracle {
    inner: (u64, BTreeSet<Key>),
    outer: (u64, BTreeSet<Key>),
}

const FIELDS: [&str; 9] = [
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
];

fn tshark(capture: &Path) -> Oracle {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n")
        .arg("-r")
        .arg(capture)
        .args(["-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE"])
        .args(["-d", "udp.port==8472,vxlan"])
        .args(["-T", "fields", "-E", "separator=/t"]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        capture.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut oracle = Oracle {
        inner: (0, BTreeSet::new()),
        outer: (0, BTreeSet::new()),
    };
    for line in String::from_utf8(out.stdout).expect("utf-8").lines() {
        let cols: Vec<Vec<&str>> = line
            .split('\t')
            .map(|c| c.split(',').filter(|s| !s.is_empty()).collect())
            .collect();
        let layers: Vec<&str> = line.split('\t').next().unwrap_or("").split(':').collect();
        let col = |i: usize| cols.get(i).cloned().unwrap_or_default();
        let (ip_src, ip_dst, ip6_src, ip6_dst) = (col(1), col(2), col(3), col(4));
        let (tcp_sp, tcp_dp, udp_sp, udp_dp) = (col(5), col(6), col(7), col(8));
        // The n-th occurrence of a layer name before position `at`.
        let nth = |name: &str, at: usize| layers[..at].iter().filter(|l| **l == name).count();
        let packet_at = |ip_at: usize| -> Option<Key> {
            let (src, dst) = if layers[ip_at] == "ip" {
                let n = nth("ip", ip_at);
                (ip_src.get(n)?, ip_dst.get(n)?)
            } else {
                let n = nth("ipv6", ip_at);
                (ip6_src.get(n)?, ip6_dst.get(n)?)
            };
            let t = ip_at
                + 1
                + layers[ip_at + 1..]
                    .iter()
                    .position(|l| matches!(*l, "tcp" | "udp" | "icmp" | "icmpv6"))?;
            // Only a transport of this very IP packet: no other IP layer or tunnel between.
            if layers[ip_at + 1..t]
                .iter()
                .any(|l| matches!(*l, "ip" | "ipv6" | "gre"))
            {
                return None;
            }
            let port = |sp: &Vec<&str>, dp: &Vec<&str>, name: &str| -> Option<(u16, u16)> {
                let n = nth(name, t);
                Some((sp.get(n)?.parse().ok()?, dp.get(n)?.parse().ok()?))
            };
            let (protocol, (sp, dp)) = match layers[t] {
                "tcp" => (6, port(&tcp_sp, &tcp_dp, "tcp")?),
                "udp" => (17, port(&udp_sp, &udp_dp, "udp")?),
                "icmp" => (1, (0, 0)),
                _ => (58, (0, 0)),
            };
            Some(key(protocol, (src.to_string(), sp), (dst.to_string(), dp)))
        };
        let is_ip = |l: &&str| matches!(*l, "ip" | "ipv6");
        let icmp_at = layers
            .iter()
            .position(|l| matches!(*l, "icmp" | "icmpv6"))
            .unwrap_or(layers.len());
        // The innermost IP packet that has a transport of its own: a tunnel whose inside has
        // none (ESP in GTP-U, a Teredo bubble) leaves the outer UDP packet as the innermost.
        if let Some(k) = (0..icmp_at)
            .rev()
            .filter(|&i| is_ip(&layers[i]))
            .find_map(packet_at)
        {
            oracle.inner.0 += 1;
            oracle.inner.1.insert(k);
        }
        if let Some(k) = layers.iter().position(is_ip).and_then(packet_at) {
            oracle.outer.0 += 1;
            oracle.outer.1.insert(k);
        }
    }
    oracle
}

/// netfm's flows, read back with pyarrow from each dataset folder: per folder,
/// (packets in all flows, flow keys).
fn flows(dirs: &[PathBuf]) -> Vec<(u64, BTreeSet<Key>)> {
    let code = r#"
import sys, json, glob, pyarrow.parquet as pq
out = []
for d in sys.argv[1:]:
    rows = []
    for f in sorted(glob.glob(d + "/**/*.parquet", recursive=True)):
        t = pq.read_table(f, columns=["src_ip", "dst_ip", "src_port", "dst_port", "protocol", "fwd_packets", "bwd_packets"])
        for r in t.to_pylist():
            # ICMP flows have no ports (null); their keys ignore ports.
            rows.append([r["src_ip"], r["dst_ip"], r["src_port"] or 0, r["dst_port"] or 0, r["protocol"], r["fwd_packets"] + r["bwd_packets"]])
    out.append(rows)
print(json.dumps(out))
"#;
    let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let out = common::python(code, &dirs);
    /// src_ip, dst_ip, src_port, dst_port, protocol, packets.
    type Row = (String, String, u16, u16, u8, u64);
    let all: Vec<Vec<Row>> = serde_json::from_str(&out).expect("python prints JSON");
    all.into_iter()
        .map(|rows| {
            let packets = rows.iter().map(|r| r.5).sum();
            let keys = rows
                .into_iter()
                .map(|(s, d, sp, dp, p, _)| key(p, (s, sp), (d, dp)))
                .collect();
            (packets, keys)
        })
        .collect()
}

fn tokenize(capture: &Path, out: &Path, tunnels: &str) {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_netfm"))
            .arg("tokenize")
            .arg(capture)
            .arg("--out")
            .arg(out)
            .args(["--tunnels", tunnels, "--quiet"]),
    );
}

/// Inner-mode packets per capture that netfm must decode (a floor, so that the comparison
/// with tshark cannot pass by both sides finding nothing): the captures whose point is an
/// encapsulation netfm decodes.
const INNER_PACKETS: &[(&str, u64)] = &[
    ("HDLC.pcap", 10),
    ("erspan-type-i-1.pcap", 2),
    ("erspan-type-i-4.pcap", 80),
    ("erspan-type-ii-2.pcap", 16),
    ("erspan-type-iii-ft-0.pcap", 9),
    ("geneve-gcp.pcap", 1),
    ("geneve.pcap", 39),
    ("gso-ipv4-vxlan-ipv6.pcap", 1),
    ("gso-ipv6-geneve-ipv4.pcap", 1),
    ("mpls-over-udp.pcap", 2),
    ("mpls-traceroute.pcap", 18),
    ("ndpi_4in4tunnel.pcap", 5),
    ("ndpi_4in6tunnel.pcap", 4),
    ("ndpi_6in4tunnel.pcap", 127),
    ("ndpi_6in6tunnel.pcap", 2),
    ("ndpi_capwap_data.pcapng", 14),
    ("ndpi_gre.pcapng", 1),
    ("ndpi_ipv6_in_gtp.pcap", 2),
    ("ndpi_teredo.pcap", 24),
    ("nsh-over-vxlan-gpe.pcap", 1),
    ("nsh.pcap", 1),
    ("various_gre.pcap", 10),
    ("vxlan.pcap", 10),
    ("vxlan_port_8472.pcap", 10),
    ("wccp_redirect_gre.pcap", 1),
];

#[test]
fn every_encap_capture_matches_tshark_inner_and_outer() {
    let caps = captures();
    assert_eq!(caps.len(), 34, "datasets/encap holds 34 captures");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut dirs = Vec::new();
    for (i, cap) in caps.iter().enumerate() {
        for mode in ["inner", "outer"] {
            let dir = tmp.path().join(format!("{i}-{mode}"));
            tokenize(cap, &dir, mode);
            dirs.push(dir);
        }
    }
    let got = flows(&dirs);
    let mut failures = Vec::new();
    let mut table = String::new();
    for (i, cap) in caps.iter().enumerate() {
        let name = cap.file_name().and_then(|n| n.to_str()).expect("name");
        let oracle = tshark(cap);
        let (inner, outer) = (&got[2 * i], &got[2 * i + 1]);
        table.push_str(&format!(
            "{name}: inner tshark {} netfm {}, outer tshark {} netfm {}\n",
            oracle.inner.0, inner.0, oracle.outer.0, outer.0
        ));
        if *inner != oracle.inner {
            failures.push(format!(
                "{name} --tunnels inner: netfm {} packets {:?}\n  tshark {} packets {:?}",
                inner.0, inner.1, oracle.inner.0, oracle.inner.1
            ));
        }
        if *outer != oracle.outer {
            failures.push(format!(
                "{name} --tunnels outer: netfm {} packets {:?}\n  tshark {} packets {:?}",
                outer.0, outer.1, oracle.outer.0, oracle.outer.1
            ));
        }
        if let Some((_, floor)) = INNER_PACKETS.iter().find(|(n, _)| *n == name) {
            if inner.0 < *floor {
                failures.push(format!(
                    "{name}: {} inner packets, expected {floor}",
                    inner.0
                ));
            }
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The outer view of a VXLAN capture is UDP to port 4789 only; the inner view holds the
/// ICMP echo flow carried inside (its two ARP-in-VXLAN frames stay outer UDP packets).
#[test]
fn vxlan_inner_and_outer_views() {
    let cap = encap_dir().join("vxlan.pcap");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (inner, outer) = (tmp.path().join("inner"), tmp.path().join("outer"));
    tokenize(&cap, &inner, "inner");
    tokenize(&cap, &outer, "outer");
    let got = flows(&[inner, outer]);
    let vxlan_port = |k: &Key| k.0 == 17 && (k.1 .1 == 4789 || k.2 .1 == 4789);
    assert!(got[0].1.iter().any(|k| k.0 == 1), "{:?}", got[0]);
    assert!(
        !got[1].1.is_empty() && got[1].1.iter().all(vxlan_port),
        "{:?}",
        got[1]
    );
    assert_eq!((got[0].0, got[1].0), (10, 10));
}

#[test]
fn netfound_mode_refuses_tunnels_outer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_netfm"))
        .arg("tokenize")
        .arg(encap_dir().join("vxlan.pcap"))
        .arg("--out")
        .arg(tmp.path())
        .args(["--format", "netfound", "--tunnels", "outer"])
        .output()
        .expect("netfm runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tunnels applies to native mode"));
}

/// The flows of a tunnelled capture say which tunnel carried them: kind, the outer
/// header's addresses and the VNI, as tshark reads them; `--tunnels outer` leaves them null.
#[test]
fn tunnel_columns_name_the_outer_header_and_id() {
    let cap = encap_dir().join("vxlan.pcap");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (inner, outer) = (tmp.path().join("inner"), tmp.path().join("outer"));
    tokenize(&cap, &inner, "inner");
    tokenize(&cap, &outer, "outer");
    // tshark: per frame with two IP layers, the first (outer) addresses and the VNI.
    let fields = Command::new("tshark")
        .arg("-r")
        .arg(&cap)
        .args([
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "vxlan.vni",
        ])
        .output()
        .expect("tshark runs");
    let mut want = BTreeSet::new();
    for line in String::from_utf8_lossy(&fields.stdout).lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() == 3 && cols[0].contains(',') {
            let src = cols[0].split(',').next().unwrap_or("").to_string();
            let dst = cols[1].split(',').next().unwrap_or("").to_string();
            want.insert((src, dst, cols[2].to_string()));
        }
    }
    assert!(!want.is_empty());
    let script = r#"
import sys, json, pyarrow.dataset as ds
for d in sys.argv[1:]:
    t = ds.dataset(d, partitioning="hive").to_table(columns=["tunnel", "outer_src_ip", "outer_dst_ip", "tunnel_id", "src_port", "dst_port"])
    print(json.dumps(t.to_pylist()))
"#;
    let text = common::python(script, &[&inner, &outer]);
    let mut lines = text.lines();
    let inner_rows: Vec<serde_json::Value> =
        serde_json::from_str(lines.next().expect("inner")).expect("json");
    let outer_rows: Vec<serde_json::Value> =
        serde_json::from_str(lines.next().expect("outer")).expect("json");
    let carrier = |r: &serde_json::Value| r["src_port"] == 4789 || r["dst_port"] == 4789;
    assert!(inner_rows.iter().any(|r| !r["tunnel"].is_null()));
    for r in &inner_rows {
        if r["tunnel"].is_null() {
            // VXLAN carrying no IP packet (ARP) stays the ordinary UDP packet.
            assert!(carrier(r), "{r}");
            continue;
        }
        assert_eq!(r["tunnel"], "vxlan", "{r}");
        let got = (
            r["outer_src_ip"].as_str().unwrap_or("").to_string(),
            r["outer_dst_ip"].as_str().unwrap_or("").to_string(),
            r["tunnel_id"]
                .as_u64()
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
        assert!(want.contains(&got), "{got:?} not among tshark's {want:?}");
    }
    for r in &outer_rows {
        assert!(r["tunnel"].is_null() && r["tunnel_id"].is_null(), "{r}");
    }
}
