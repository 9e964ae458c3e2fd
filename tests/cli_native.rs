//! End-to-end tests of `netfm tokenize` in native (Parquet) mode on the bundled captures,
//! with Python's pyarrow as the real consumer of what we write.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{pcaps, run_ok};

fn netfm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netfm"))
}

fn summary_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON summary")
}

/// Runs Python code with `sys.argv[1]` = the dataset folder; returns its stdout.
fn python(code: &str, dir: &Path) -> String {
    common::python(code, &[dir])
}

#[test]
fn pyarrow_reads_the_native_dataset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_dir = tmp.path().join("flows");
    let out = run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcaps())
            .arg("--out")
            .arg(&out_dir)
            .arg("--json"),
    );
    let s = summary_json(&out);
    let flows = s["flows"].as_u64().expect("flows");
    let decoded = s["packets_decoded"].as_u64().expect("packets_decoded");
    assert!(flows > 50, "bundled captures hold many flows, got {flows}");
    assert_eq!(s["files"].as_u64(), Some(16));
    assert_eq!(s["files_failed"].as_u64(), Some(0));

    let report = python(
        r#"
import sys, json, pyarrow.dataset as ds, pyarrow.compute as pc
d = ds.dataset(sys.argv[1], partitioning="hive")
t = d.to_table()
pk = pc.sum(pc.add(t["fwd_packets"], t["bwd_packets"])).as_py()
http = t.filter(pc.and_(pc.equal(t["src_ip"], "141.142.228.5"), pc.equal(t["src_port"], 59856))).to_pylist()
print(json.dumps({
  "rows": t.num_rows,
  "packets": pk,
  "protos": sorted(set(t["proto"].to_pylist())),
  "ids_unique": len(set(t["flow_id"].to_pylist())) == t.num_rows,
  "http": [{k: r[k] for k in ("dst_ip", "dst_port", "protocol", "fwd_packets", "bwd_packets", "directions", "counts", "source")} | {"first": r["burst_tokens"][0][0:18]} for r in http],
  "files": sorted(f.split("/")[-2] for f in d.files),
}))
"#,
        &out_dir,
    );
    let r: serde_json::Value = serde_json::from_str(&report).expect("python prints JSON");
    assert_eq!(r["rows"].as_u64(), Some(flows), "one row per flow");
    assert_eq!(
        r["packets"].as_u64(),
        Some(decoded),
        "every decoded packet is in exactly one flow"
    );
    assert_eq!(r["ids_unique"], serde_json::json!(true));
    let protos: Vec<&str> = r["protos"]
        .as_array()
        .expect("protos")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for p in ["icmp", "icmpv6", "tcp", "udp"] {
        assert!(
            protos.contains(&p),
            "partition proto={p} missing: {protos:?}"
        );
    }
    // zeek's http/get.pcap: one TCP connection, 14 packets; netFound's golden tokens of its SYN.
    let http = r["http"].as_array().expect("http rows");
    assert_eq!(http.len(), 1, "{http:?}");
    let h = &http[0];
    assert_eq!(h["dst_ip"], "192.150.187.43");
    assert_eq!(h["dst_port"], 80);
    assert_eq!(h["protocol"], 6);
    assert_eq!(
        h["fwd_packets"].as_u64().unwrap_or(0) + h["bwd_packets"].as_u64().unwrap_or(0),
        14
    );
    assert!(h["source"]
        .as_str()
        .unwrap_or("")
        .ends_with("http_get.pcap"));
    assert_eq!(
        h["first"],
        serde_json::json!([20, 0, 64, 2, 64, 2, 65535, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    );
    assert_eq!(
        h["directions"],
        serde_json::json!([true, false, true, false, true, false, true])
    );
    assert_eq!(h["counts"], serde_json::json!([1, 1, 2, 5, 3, 1, 1]));
    // No temporary part is left behind.
    for entry in walk(&out_dir) {
        let name = entry
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        assert!(
            !name.ends_with(".tmp"),
            "leftover temporary file {}",
            entry.display()
        );
    }
}

/// Every file below `dir` but the run's manifest (which records times and paths).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.ends_with("_manifest.json") {
                out.push(p);
            }
        }
    }
    out
}

fn flow_ids(dir: &Path) -> Vec<u64> {
    let text = python(
        "import sys, json, pyarrow.dataset as ds\nprint(json.dumps(sorted(ds.dataset(sys.argv[1], partitioning='hive').to_table()['flow_id'].to_pylist())))",
        dir,
    );
    serde_json::from_str(&text).expect("ids")
}

/// `netfm tokenize` of the bundled captures into `dir/name` (quiet, with `extra` flags).
fn tokenize_bundled(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcaps())
            .arg("--out")
            .arg(&out)
            .arg("-q")
            .args(extra),
    );
    out
}

#[test]
fn shards_partition_the_input_list() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let full = tokenize_bundled(tmp.path(), "full", &[]);
    let mut union = Vec::new();
    for i in 0..3 {
        let d = tokenize_bundled(
            tmp.path(),
            &format!("s{i}"),
            &["--shard", &format!("{i}/3")],
        );
        let ids = flow_ids(&d);
        assert!(!ids.is_empty(), "shard {i} got no flows");
        union.extend(ids);
    }
    union.sort_unstable();
    assert_eq!(
        union,
        flow_ids(&full),
        "the shards together are exactly the whole run"
    );
}

/// Rows per part file and the flow ids in each, via pyarrow.
fn part_rows(dir: &Path) -> Vec<(String, Vec<u64>)> {
    let text = python(
        "import sys, os, json, pyarrow.parquet as pq\nout=[]\nfor d,_,fs in sorted(os.walk(sys.argv[1])):\n  for f in sorted(fs):\n    if not f.endswith('.parquet'): continue\n    p=os.path.join(d,f)\n    out.append([os.path.relpath(p, sys.argv[1]), pq.read_table(p)['flow_id'].to_pylist()])\nprint(json.dumps(out))",
        dir,
    );
    serde_json::from_str(&text).expect("parts")
}

#[test]
fn parallel_writers_are_deterministic_and_respect_part_rows() {
    // Several capture files: each file's flows go out as at least one message, and
    // messages alternate between the two writer threads, so both write parts.
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tokenize_bundled(tmp.path(), "a", &[]);
    let b = tokenize_bundled(tmp.path(), "b", &[]);
    let files = |d: &Path| {
        let mut v: Vec<(PathBuf, Vec<u8>)> = walk(d)
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).expect("read part");
                (p.strip_prefix(d).expect("under out").to_path_buf(), bytes)
            })
            .collect();
        v.sort();
        v
    };
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(
        fa.iter().map(|f| &f.0).collect::<Vec<_>>(),
        fb.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(fa == fb, "two runs on the same input write the same bytes");
    let names: Vec<String> = fa.iter().map(|f| f.0.display().to_string()).collect();
    assert!(
        names
            .iter()
            .any(|n| n == "proto=tcp/part-s0of1-00000.parquet")
            && names
                .iter()
                .any(|n| n == "proto=tcp/part-s0of1-00001.parquet"),
        "both writers wrote TCP parts: {names:?}"
    );

    // Small parts: every part holds at most --part-rows flows, no flow is lost or doubled.
    let small = tokenize_bundled(tmp.path(), "small", &["--part-rows", "3"]);
    let parts = part_rows(&small);
    assert!(parts.len() > 4, "{parts:?}");
    let mut ids = Vec::new();
    for (name, rows) in &parts {
        assert!(
            !rows.is_empty() && rows.len() <= 3,
            "{name}: {} rows",
            rows.len()
        );
        ids.extend(rows.iter().copied());
    }
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "a flow id appears in two parts");
    assert_eq!(ids, flow_ids(&a));
}

#[test]
fn zstd_level_changes_the_bytes_not_the_rows() {
    // The same flows at levels 1 and 19: pyarrow reads the same table from both, and the
    // higher level's parts are smaller (so the level reaches the encoder of
    // every column, the hand-encoded burst columns included).
    let tmp = tempfile::tempdir().expect("tempdir");
    let fast = tokenize_bundled(tmp.path(), "fast", &["--zstd-level", "1"]);
    let small = tokenize_bundled(tmp.path(), "small", &["--zstd-level", "19"]);
    let bytes = |d: &Path| -> u64 {
        walk(d)
            .iter()
            .map(|p| std::fs::metadata(p).expect("part").len())
            .sum()
    };
    let (b_fast, b_small) = (bytes(&fast), bytes(&small));
    assert!(
        b_small < b_fast,
        "level 19 wrote {b_small} bytes, level 1 {b_fast}"
    );
    let table = |d: &Path| {
        python(
            "import sys, hashlib, pyarrow.dataset as ds\nt = ds.dataset(sys.argv[1], partitioning='hive').to_table().sort_by('flow_id')\nprint(t.num_rows, hashlib.sha256(str(t.to_pylist()).encode()).hexdigest())",
            d,
        )
    };
    let (t_fast, t_small) = (table(&fast), table(&small));
    assert!(!t_fast.starts_with("0 "), "{t_fast}");
    assert_eq!(t_fast, t_small, "same rows at both levels");
}

#[test]
fn flow_table_bound_evicts_without_losing_packets() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcaps().join("wikipedia.pcap"))
            .arg("--out")
            .arg(tmp.path().join("o"))
            .args(["--max-flows", "2", "--json"]),
    );
    let s = summary_json(&out);
    assert!(s["flows_evicted"].as_u64().unwrap_or(0) > 0, "{s}");
    let packets = python(
        "import sys, pyarrow.dataset as ds, pyarrow.compute as pc\nt=ds.dataset(sys.argv[1], partitioning='hive').to_table()\nprint(pc.sum(pc.add(t['fwd_packets'], t['bwd_packets'])).as_py())",
        &tmp.path().join("o"),
    );
    assert_eq!(
        packets.trim().parse::<u64>().ok(),
        s["packets_decoded"].as_u64()
    );
}

#[test]
fn netfound_mode_respects_the_flow_bound() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = |extra: &[&str], out: &str| {
        summary_json(&run_ok(
            netfm()
                .arg("tokenize")
                .arg(pcaps().join("wikipedia.pcap"))
                .arg("--out")
                .arg(tmp.path().join(out))
                .args(["--format", "netfound", "--json"])
                .args(extra),
        ))
    };
    let free = run(&[], "free");
    let bounded = run(&["--max-flows", "2"], "bounded");
    assert_eq!(free["flows_evicted"].as_u64(), Some(0));
    assert!(
        bounded["flows_evicted"].as_u64().unwrap_or(0) > 0,
        "{bounded}"
    );
    // Eviction can only cut connections into more flows, never lose one.
    assert!(
        bounded["flows"].as_u64() >= free["flows"].as_u64(),
        "{free} {bounded}"
    );
}

#[test]
fn truncated_capture_warns_and_strict_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(pcaps().join("smtp.pcap")).expect("read");
    let cut = tmp.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() / 2 + 7]).expect("write");
    let out = run_ok(
        netfm()
            .arg("tokenize")
            .arg(&cut)
            .arg("--out")
            .arg(tmp.path().join("a"))
            .arg("--json"),
    );
    let s = summary_json(&out);
    assert_eq!(s["files_damaged"].as_u64(), Some(1), "{s}");
    let w = &s["warnings"][0];
    assert!(w["file"].as_str().unwrap_or("").ends_with("cut.pcap"));
    assert!(w["byte_offset"].as_u64().unwrap_or(0) > 0);
    // Every record that lies wholly before the cut is read (classic LE pcap: 24-byte file
    // header, 16-byte record headers with the captured length at offset 8).
    let cut_at = bytes.len() / 2 + 7;
    let (mut off, mut whole) = (24usize, 0u64);
    while off + 16 <= cut_at {
        let incl =
            u32::from_le_bytes(bytes[off + 8..off + 12].try_into().expect("4 bytes")) as usize;
        if off + 16 + incl > cut_at {
            break;
        }
        off += 16 + incl;
        whole += 1;
    }
    assert!(whole > 30);
    assert_eq!(
        s["packets_read"].as_u64(),
        Some(whole),
        "packets before the cut are used: {s}"
    );
    assert_eq!(
        w["byte_offset"].as_u64(),
        Some(off as u64),
        "the warning names the damaged record's offset"
    );

    let strict = netfm()
        .arg("tokenize")
        .arg(&cut)
        .arg("--out")
        .arg(tmp.path().join("b"))
        .args(["--strict", "--quiet"])
        .output()
        .expect("runs");
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn gzip_on_stdin_equals_the_plain_file() {
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tempdir");
    let plain = std::fs::read(pcaps().join("wikipedia.pcap")).expect("read");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let mut child = netfm()
        .args(["tokenize", "-", "--json", "--out"])
        .arg(tmp.path().join("stdin"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&gz)
        .expect("feed");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_stdin = summary_json(&out);
    let from_file = summary_json(&run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcaps().join("wikipedia.pcap"))
            .arg("--json")
            .arg("--out")
            .arg(tmp.path().join("file")),
    ));
    for k in [
        "packets_read",
        "packets_decoded",
        "flows",
        "bursts",
        "tokens",
    ] {
        assert_eq!(from_stdin[k], from_file[k], "{k}");
    }
}

#[test]
fn bad_flags_and_missing_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases: &[&[&str]] = &[
        &["tokenize", "/nonexistent/x.pcap", "--out"],
        &["tokenize", "datasets/pcaps", "--shard", "3/3", "--out"],
        &["tokenize", "datasets/pcaps", "--zstd-level", "23", "--out"],
        &[
            "tokenize",
            "datasets/pcaps",
            "--idle-timeout",
            "-5",
            "--out",
        ],
    ];
    for args in cases {
        let out = netfm()
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(*args)
            .arg(tmp.path().join("o"))
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.to_lowercase().contains("error"), "{args:?}: {err}");
    }
}

/// Every capture of the netFound conformance set, malformed ones included, goes through the
/// whole native pipeline without a crash; damaged and undecodable inputs are reported.
#[test]
fn whole_conformance_set_runs_natively_without_crash() {
    let dir = std::env::var_os("NETFM_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/netfound")
        })
        .join("pcaps");
    assert!(
        dir.is_dir(),
        "conformance captures not found at {}",
        dir.display()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    for format in ["parquet", "netfound"] {
        let out = run_ok(
            netfm()
                .arg("tokenize")
                .arg(&dir)
                .arg("--out")
                .arg(tmp.path().join(format))
                .args(["--json", "--format", format]),
        );
        let s = summary_json(&out);
        assert_eq!(s["files"].as_u64(), Some(51), "{format}: {s}");
        assert!(s["flows"].as_u64().unwrap_or(0) > 80, "{format}: {s}");
        // The invalid-version capture is read (as Wireshark does); nothing fails to open.
        assert_eq!(s["files_failed"].as_u64(), Some(0), "{format}: {s}");
        let strict = netfm()
            .arg("tokenize")
            .arg(&dir)
            .arg("--out")
            .arg(tmp.path().join(format!("{format}-strict")))
            .args(["--quiet", "--strict", "--format", format])
            .output()
            .expect("runs");
        assert_eq!(
            strict.status.code(),
            Some(1),
            "{format}: malformed inputs make --strict fail"
        );
        assert!(!String::from_utf8_lossy(&strict.stderr).contains("panicked"));
    }
}

/// The README's first command: `netfm demo` tokenizes the bundled captures and shows flows.
#[test]
fn demo_runs_on_the_bundled_captures() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_dir = tmp.path().join("demo");
    let out = run_ok(
        netfm()
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("demo")
            .arg("--out")
            .arg(&out_dir),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("files      16 read, 0 failed"), "{text}");
    assert!(
        text.contains("-> [2001:470:4867:99::21]:"),
        "IPv6 endpoints are bracketed: {text}"
    );
    // A second run replaces its own output; a folder it did not make is refused.
    run_ok(
        netfm()
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("demo")
            .arg("--out")
            .arg(&out_dir),
    );
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(foreign.join("keep.txt"), b"x").expect("write");
    let refused = netfm()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("demo")
        .arg("--out")
        .arg(&foreign)
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        foreign.join("keep.txt").exists(),
        "the demo never deletes a folder it did not make"
    );
}
