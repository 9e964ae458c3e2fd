//! `netfm tokenize` never lets stale, duplicated or mislabelled data through silently, and
//! its outputs describe themselves: reused output folders, inputs named twice, packets out
//! of time order, labels from folders, `--strict`, interruption, counts that add up,
//! manifests and metadata, DuckDB and pyarrow as consumers, ICMP's own columns, netFound
//! mode's IPC formats, readable errors and compressed captures.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{pcaps, python, run_ok};

fn netfm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netfm"))
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON summary")
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The dataset's rows through pyarrow, as JSON records (timestamps as microseconds).
fn rows(dir: &Path) -> Vec<serde_json::Value> {
    let text = python(
        r#"
import sys, json, pyarrow as pa, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], partitioning="hive").to_table()
cols = {}
for name in t.column_names:
    c = t[name]
    if pa.types.is_timestamp(c.type):
        c = c.cast(pa.int64())
    cols[name] = c.to_pylist()
print(json.dumps([{k: cols[k][i] for k in cols} for i in range(t.num_rows)]))
"#,
        &[dir],
    );
    serde_json::from_str(&text).expect("rows")
}

fn tokenize(args: &[&std::ffi::OsStr]) -> Output {
    netfm()
        .arg("tokenize")
        .args(args)
        .output()
        .expect("netfm runs")
}

fn pcap(name: &str) -> PathBuf {
    pcaps().join(name)
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    out.sort();
    out
}

#[test]
fn an_occupied_out_is_refused_overwritten_only_on_success_or_appended_to() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("flows");
    let o = out.as_os_str();
    run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcaps())
            .arg("--out")
            .arg(&out)
            .arg("-q"),
    );
    let all = rows(&out).len();
    assert!(all > 100);
    // Reusing the folder is refused and leaves it as it was.
    let again = tokenize(&[pcap("http_get.pcap").as_os_str(), "--out".as_ref(), o]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr_of(&again).contains("--overwrite"),
        "{}",
        stderr_of(&again)
    );
    assert_eq!(rows(&out).len(), all);
    // An overwrite whose run fails (no capture in its input) leaves the old dataset.
    let junk = tmp.path().join("junk.pcap");
    std::fs::write(&junk, b"not a capture at all").expect("write");
    let failed = tokenize(&[
        junk.as_os_str(),
        "--out".as_ref(),
        o,
        "--overwrite".as_ref(),
    ]);
    assert_eq!(failed.status.code(), Some(2), "{}", stderr_of(&failed));
    assert_eq!(rows(&out).len(), all, "old parts stay until a run succeeds");
    let hidden: Vec<_> = std::fs::read_dir(&out)
        .expect("ls")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".netfm-staging")
        })
        .collect();
    assert!(hidden.is_empty(), "a failed run leaves no staging folder");
    // A successful overwrite replaces it: one flow, nothing of the old run.
    run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcap("http_get.pcap"))
            .arg("--out")
            .arg(&out)
            .arg("--overwrite")
            .arg("-q"),
    );
    assert_eq!(rows(&out).len(), 1);
    // Appending with the same settings adds; the manifest lists both runs' parts.
    run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcap("dhcp.pcap"))
            .arg("--out")
            .arg(&out)
            .arg("--append")
            .arg("-q"),
    );
    let r = rows(&out);
    assert!(r.len() > 1);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(manifest["runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(manifest["rows"].as_u64(), Some(r.len() as u64));
    assert_eq!(
        manifest["parts"].as_array().map(Vec::len),
        Some(parquet_files(&out).len())
    );
    // Appending with other settings is refused, naming the setting.
    let other = tokenize(&[
        pcap("dhcp.pcap").as_os_str(),
        "--out".as_ref(),
        o,
        "--append".as_ref(),
        "--no-payload".as_ref(),
    ]);
    assert_eq!(other.status.code(), Some(2));
    assert!(
        stderr_of(&other).contains("token_layout.payload"),
        "{}",
        stderr_of(&other)
    );
    assert_eq!(rows(&out).len(), r.len());
    // An overwrite never replaces the folder its input lies in.
    let inside = out.join("proto=udp");
    let err = tokenize(&[
        inside.as_os_str(),
        "--out".as_ref(),
        o,
        "--overwrite".as_ref(),
    ]);
    assert_eq!(err.status.code(), Some(2));
}

#[test]
fn model_export_refuses_an_occupied_out_and_overwrite_leaves_no_stale_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("model");
    run_ok(
        netfm()
            .args(["model", "export", "--size", "tiny", "--out"])
            .arg(&out),
    );
    assert!(out.join("checkpoint.safetensors").is_file());
    let served = tmp.path().join("served");
    std::fs::create_dir(&served).expect("mkdir");
    std::fs::write(served.join("checkpoint.safetensors"), b"stale").expect("write");
    let refused = netfm()
        .args(["model", "export", "--checkpoint"])
        .arg(out.join("checkpoint.safetensors"))
        .arg("--out")
        .arg(&served)
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr_of(&refused).contains("not empty"),
        "{}",
        stderr_of(&refused)
    );
    run_ok(
        netfm()
            .args(["model", "export", "--overwrite", "--checkpoint"])
            .arg(out.join("checkpoint.safetensors"))
            .arg("--out")
            .arg(&served),
    );
    assert!(served.join("inference.onnx").is_file());
    assert!(
        !served.join("checkpoint.safetensors").exists(),
        "the stale checkpoint is gone"
    );
    assert!(served.join("_manifest.json").is_file());
}

#[test]
fn an_input_named_twice_is_read_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let once = tmp.path().join("once");
    let twice = tmp.path().join("twice");
    let http = pcap("http_get.pcap");
    run_ok(
        netfm()
            .arg("tokenize")
            .arg(&http)
            .arg("--out")
            .arg(&once)
            .arg("-q"),
    );
    let out = run_ok(
        netfm()
            .arg("tokenize")
            .arg(&http)
            .arg(&http)
            .arg(pcaps())
            .arg("--out")
            .arg(&twice)
            .arg("--json"),
    );
    let s = json_of(&out);
    let dups = s["files_duplicate"].as_array().expect("duplicates");
    assert_eq!(dups.len(), 2, "{dups:?}");
    assert_eq!(s["files"].as_u64(), Some(16));
    let ids: Vec<u64> = rows(&twice)
        .iter()
        .map(|r| r["flow_id"].as_u64().expect("id"))
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "no flow twice");
    assert_eq!(rows(&once).len(), 1);
}

/// `http_get.pcap` with record `k`'s timestamp moved `seconds` earlier.
fn moved_earlier(k: usize, seconds: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(pcap("http_get.pcap")).expect("read");
    let mut at = 24;
    for _ in 0..k {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4"));
        at += 16 + caplen as usize;
    }
    let ts = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
    bytes[at..at + 4].copy_from_slice(&(ts - seconds).to_le_bytes());
    bytes
}

#[test]
fn packets_out_of_time_order_are_counted_and_flows_span_earliest_to_latest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let capture = tmp.path().join("moved.pcap");
    std::fs::write(&capture, moved_earlier(5, 3600)).expect("write");
    let out_dir = tmp.path().join("flows");
    let out = run_ok(
        netfm()
            .arg("tokenize")
            .arg(&capture)
            .arg("--out")
            .arg(&out_dir)
            .arg("--json"),
    );
    let s = json_of(&out);
    assert_eq!(s["packets_out_of_order"].as_u64(), Some(1));
    let files = s["out_of_order_files"].as_array().expect("files");
    assert_eq!(
        files[0]["max_step_back_us"].as_u64().map(|u| u / 1_000_000),
        Some(3599)
    );
    let r = rows(&out_dir);
    assert_eq!(r.len(), 1);
    let (start, end) = (
        r[0]["start_time"].as_i64().expect("start"),
        r[0]["end_time"].as_i64().expect("end"),
    );
    let duration = r[0]["flow_duration"].as_i64().expect("duration");
    // The flow starts at its earliest packet (the moved one) and ends at its latest.
    assert!(end - start > 3_599_000_000, "{start} {end}");
    assert!(
        (duration - (end - start)).abs() <= 1,
        "{duration} vs {}",
        end - start
    );
    // The inter-arrival times are never negative or wrapped.
    for iat in r[0]["iats"].as_array().expect("iats") {
        assert!(iat.as_u64().expect("iat") < 4_000_000_000, "{iat}");
    }
}

#[test]
fn labels_come_from_the_first_folder_level_and_a_missing_one_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lab = tmp.path().join("lab");
    let deep = lab.join("malware/2024");
    std::fs::create_dir_all(&deep).expect("mkdir");
    std::fs::create_dir_all(lab.join("benign")).expect("mkdir");
    std::fs::copy(pcap("http_get.pcap"), deep.join("x.pcap")).expect("copy");
    std::fs::copy(pcap("dhcp.pcap"), lab.join("benign/y.pcap")).expect("copy");
    let out = tmp.path().join("flows");
    run_ok(
        netfm()
            .arg("tokenize")
            .arg(&lab)
            .arg("--label-from-dir")
            .arg("--out")
            .arg(&out)
            .arg("-q"),
    );
    let mut labels: Vec<String> = rows(&out)
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["labels"].as_str().unwrap_or("NULL"),
                r["protocol"]
            )
        })
        .collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels, ["benign:17", "malware:6"]);
    // A file named on the command line has no label folder: an error, and no output.
    let out2 = tmp.path().join("flows2");
    let e = tokenize(&[
        deep.join("x.pcap").as_os_str(),
        "--label-from-dir".as_ref(),
        "--out".as_ref(),
        out2.as_os_str(),
    ]);
    assert_eq!(e.status.code(), Some(2));
    assert!(stderr_of(&e).contains("has no label"), "{}", stderr_of(&e));
    assert!(!out2.exists());
    // So does standard input.
    let mut child = netfm()
        .args(["tokenize", "-", "--label-from-dir", "--out"])
        .arg(tmp.path().join("flows3"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdin.take());
    let e = child.wait_with_output().expect("wait");
    assert_eq!(e.status.code(), Some(2));
    assert!(
        stderr_of(&e).contains("standard input"),
        "{}",
        stderr_of(&e)
    );
}

#[test]
fn strict_fails_on_any_input_not_fully_read_and_no_capture_is_always_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = |n: &str| tmp.path().join(n);
    // An empty folder, and one holding only non-captures: errors with or without --strict.
    let empty = out("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let texts = out("texts");
    std::fs::create_dir(&texts).expect("mkdir");
    std::fs::write(texts.join("notes.txt"), b"hello").expect("write");
    for dir in [&empty, &texts] {
        for strict in [false, true] {
            let mut args = vec![
                dir.as_os_str(),
                "--out".as_ref(),
                out("o1").into_os_string().leak(),
            ];
            if strict {
                args.push("--strict".as_ref());
            }
            let e = tokenize(&args);
            assert_eq!(e.status.code(), Some(2), "{}", stderr_of(&e));
            assert!(
                stderr_of(&e).contains("no capture to read"),
                "{}",
                stderr_of(&e)
            );
        }
    }
    // An unreadable file named beside a good one: a warning, and exit 1 under --strict.
    let unreadable = Path::new("/proc/self/mem");
    let good = pcap("dhcp.pcap");
    let plain = tokenize(&[
        good.as_os_str(),
        unreadable.as_os_str(),
        "--out".as_ref(),
        out("o2").as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr_of(&plain));
    assert_eq!(json_of(&plain)["files_failed"].as_u64(), Some(1));
    let strict = tokenize(&[
        good.as_os_str(),
        unreadable.as_os_str(),
        "--out".as_ref(),
        out("o3").as_os_str(),
        "--strict".as_ref(),
    ]);
    assert_eq!(strict.status.code(), Some(1), "{}", stderr_of(&strict));
    // Only unreadable inputs: nothing was read, an error.
    let none = tokenize(&[
        unreadable.as_os_str(),
        "--out".as_ref(),
        out("o4").as_os_str(),
    ]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr_of(&none));
    assert!(stderr_of(&none).contains("no capture could be read"));
    assert!(!out("o4").exists(), "no output folder is left");
    // A damaged capture under --strict.
    let cut = out("cut.pcap");
    let bytes = std::fs::read(pcap("http_get.pcap")).expect("read");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).expect("write");
    let damaged = tokenize(&[
        cut.as_os_str(),
        "--out".as_ref(),
        out("o5").as_os_str(),
        "--strict".as_ref(),
    ]);
    assert_eq!(damaged.status.code(), Some(1), "{}", stderr_of(&damaged));
}

/// A classic pcap stream: the header of `http_get.pcap`, then records made of its
/// first record's bytes with the given timestamps and source ports.
fn stream_records(packets: &[(u32, u16)]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let bytes = std::fs::read(pcap("http_get.pcap")).expect("read");
    let header = bytes[..24].to_vec();
    let caplen = u32::from_le_bytes(bytes[24 + 8..24 + 12].try_into().expect("4")) as usize;
    let first = &bytes[24..24 + 16 + caplen];
    let records = packets
        .iter()
        .map(|&(ts, port)| {
            let mut r = first.to_vec();
            r[0..4].copy_from_slice(&ts.to_le_bytes());
            // The TCP source port: Ethernet 14 + IPv4 20 bytes into the frame.
            r[16 + 34..16 + 36].copy_from_slice(&port.to_be_bytes());
            r
        })
        .collect();
    (header, records)
}

#[test]
fn sigint_on_a_stream_writes_every_open_flow_and_part_seconds_publishes_parts_as_it_goes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("live");
    let mut child = netfm()
        .args([
            "tokenize",
            "-",
            "--idle-timeout",
            "1",
            "--part-seconds",
            "0.5",
            "--json",
            "--out",
        ])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    // Flow A at t=1000 s, then flow B at t=1010 s: A idles out (timeout 1 s) and is written.
    let (header, records) = stream_records(&[(1000, 40000), (1000, 40000), (1010, 40001)]);
    stdin.write_all(&header).expect("write");
    for r in &records {
        stdin.write_all(r).expect("write");
    }
    stdin.flush().expect("flush");
    // Packets go on arriving: they hand what came before on.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let (_, later) = stream_records(&[(1011, 40001), (1011, 40001)]);
    for r in &later {
        stdin.write_all(r).expect("write");
        stdin.flush().expect("flush");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // The part holding A is closed under its final name while the stream is still open.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while parquet_files(&out).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no part published");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        rows(&out).len(),
        1,
        "flow A is readable while the capture goes on"
    );
    // Ctrl-C: B, still open, is ended and written; the stream stays open meanwhile.
    // SAFETY: kill with a valid pid and signal.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let done = child.wait_with_output().expect("wait");
    drop(stdin);
    assert_eq!(done.status.code(), Some(0), "{}", stderr_of(&done));
    let s = json_of(&done);
    assert_eq!(s["interrupted_by"], "SIGINT");
    let r = rows(&out);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r.iter().any(|f| f["end_reason"] == "interrupted"), "{r:?}");
    assert!(r.iter().any(|f| f["end_reason"] == "idle"), "{r:?}");
    for e in walkdir(&out) {
        assert!(
            !e.to_string_lossy().ends_with(".tmp"),
            "left {}",
            e.display()
        );
    }
    assert!(out.join("_manifest.json").is_file());
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        // (A folder a running netfm has not made yet holds nothing.)
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn netfound_mode_counts_add_up_and_its_ipc_formats_open_as_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stream = tmp.path().join("stream");
    let s = json_of(&run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcaps())
            .args(["--format", "netfound", "--json", "--out"])
            .arg(&stream),
    ));
    let skipped: u64 = s["packets_skipped"]
        .as_object()
        .expect("skipped")
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(
        s["packets_read"].as_u64(),
        Some(s["packets_decoded"].as_u64().expect("decoded") + skipped),
        "read = decoded + skipped: {s}"
    );
    assert!(!s["packets_dropped"]
        .as_object()
        .expect("dropped")
        .is_empty());
    assert!(stream.join("netfound-s0of1.arrows").is_file());
    let file = tmp.path().join("file");
    run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcaps())
            .args(["--format", "netfound", "--ipc", "file", "-q", "--out"])
            .arg(&file),
    );
    let counts = python(
        r#"
import sys, pyarrow as pa, pyarrow.feather as feather, duckdb
s = pa.ipc.open_stream(sys.argv[1] + "/netfound-s0of1.arrows").read_all()
f = pa.ipc.open_file(sys.argv[2] + "/netfound-s0of1.arrow")
t = feather.read_table(sys.argv[2] + "/netfound-s0of1.arrow")
assert f.schema == s.schema, (f.schema, s.schema)
n = duckdb.sql("select count(*) from t").fetchall()[0][0]
print(s.num_rows, f.read_all().num_rows, t.num_rows, n)
"#,
        &[&stream, &file],
    );
    let n: Vec<&str> = counts.split_whitespace().collect();
    assert_eq!(n.len(), 4);
    assert!(n.iter().all(|x| *x == n[0]), "{counts}");
}

#[test]
fn every_dataset_says_what_made_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("flows");
    let s = json_of(&run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcaps())
            .args([
                "--tcp-options",
                "--json",
                "--internal-net",
                "10.0.0.0/8",
                "--out",
            ])
            .arg(&out),
    ));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(m["kind"], "netfm-parquet");
    let set = &m["settings"];
    assert_eq!(set["token_layout"]["tcp_options"], true);
    assert_eq!(set["internal_nets"], serde_json::json!(["10.0.0.0/8"]));
    assert_eq!(set["idle_timeout_ns"].as_u64(), Some(120_000_000_000));
    assert_eq!(set["max_bursts"].as_u64(), Some(12));
    let run = &m["runs"][0];
    assert_eq!(run["netfm_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(run["summary"]["flows"], s["flows"]);
    let inputs = run["inputs"].as_array().expect("inputs");
    assert_eq!(inputs.len(), 16);
    let http = inputs
        .iter()
        .find(|i| i["path"].as_str().unwrap_or("").ends_with("http_get.pcap"))
        .expect("http_get listed");
    assert_eq!(
        http["size"].as_u64(),
        Some(
            std::fs::metadata(pcap("http_get.pcap"))
                .expect("meta")
                .len()
        )
    );
    assert!(http["modified"].as_str().unwrap_or("").ends_with('Z'));
    assert_eq!(m["rows"], s["flows"]);
    // Each part's footer carries the settings and the vocabulary; the fields their units.
    let check = python(
        r#"
import sys, json, pyarrow.parquet as pq, glob
for p in glob.glob(sys.argv[1] + "/proto=*/*.parquet"):
    md = pq.read_metadata(p).metadata
    s = json.loads(md[b"netfm.settings"])
    assert s["token_layout"]["tcp_options"] is True, s
    v = json.loads(md[b"netfm.vocab"])
    assert v["size"] == 65600 and v["token_shift"] == 1, v
    sch = pq.read_schema(p)
    assert sch.field("flow_duration").metadata[b"unit"] == b"microseconds"
    assert sch.field("iats").metadata[b"unit"] == b"microseconds"
    assert b"UTC" in sch.field("start_time").metadata[b"unit"]
print("ok")
"#,
        &[&out],
    );
    assert_eq!(check.trim(), "ok");
}

#[test]
fn duckdb_queries_the_native_dataset_as_it_is() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("flows");
    let s = json_of(&run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcaps())
            .arg("--json")
            .arg("--out")
            .arg(&out),
    ));
    let text = python(
        r#"
import sys, json, duckdb
q = f"""
select count(*) as flows,
       sum(fwd_packets + bwd_packets) as packets,
       max(epoch_us(end_time) - epoch_us(start_time) - flow_duration) as off_max,
       min(epoch_us(end_time) - epoch_us(start_time) - flow_duration) as off_min,
       max(date_diff('microsecond', start_time, end_time)) as longest_us,
       count(*) filter (where protocol in (1, 58) and src_port is not null) as icmp_with_ports,
       count(*) filter (where protocol in (1, 58) and icmp_type is null) as icmp_without_type,
       count(*) filter (where protocol in (6, 17) and src_port is null) as tcp_without_ports,
       count(distinct proto) as partitions
from read_parquet('{sys.argv[1]}/**/*.parquet', hive_partitioning = true)
"""
print(json.dumps(dict(zip([d[0] for d in duckdb.sql(q).description], duckdb.sql(q).fetchall()[0]))))
"#,
        &[&out],
    );
    let r: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(r["flows"], s["flows"]);
    assert_eq!(r["packets"], s["packets_decoded"]);
    // Durations are whole microseconds of end - start (truncated as netFound does).
    assert!(
        r["off_max"].as_i64().expect("off") <= 1 && r["off_min"].as_i64().expect("off") >= -1,
        "{r}"
    );
    assert!(r["longest_us"].as_i64().expect("longest") > 0);
    assert_eq!(r["icmp_with_ports"], 0);
    assert_eq!(r["icmp_without_type"], 0);
    assert_eq!(r["tcp_without_ports"], 0);
    assert_eq!(r["partitions"], 4);
}

#[test]
fn icmp_flows_have_their_own_columns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("flows");
    run_ok(
        netfm()
            .arg("tokenize")
            .arg(pcaps())
            .arg("-q")
            .arg("--out")
            .arg(&out),
    );
    let r = rows(&out);
    let icmp: Vec<&serde_json::Value> = r.iter().filter(|f| f["protocol"] == 1).collect();
    assert!(!icmp.is_empty());
    for f in &icmp {
        assert!(f["src_port"].is_null() && f["dst_port"].is_null(), "{f}");
        assert!(f["icmp_type"].is_u64() && f["icmp_code"].is_u64(), "{f}");
    }
    // The demo's "192.168.1.1:25 -> 10.10.1.4:1470 proto 1": a port unreachable quoting
    // the TCP flow 10.10.1.4:1470 -> 192.168.1.1:25.
    let unreachable = icmp
        .iter()
        .find(|f| f["src_ip"] == "192.168.1.1" && f["dst_ip"] == "10.10.1.4")
        .expect("the quoted-flow ICMP error");
    assert_eq!(unreachable["icmp_type"], 3);
    assert_eq!(unreachable["icmp_quoted_protocol"], 6);
    let mut quoted = [
        unreachable["icmp_quoted_src_port"].as_u64().expect("port"),
        unreachable["icmp_quoted_dst_port"].as_u64().expect("port"),
    ];
    quoted.sort();
    assert_eq!(quoted, [25, 1470]);
    let echo = icmp
        .iter()
        .find(|f| f["icmp_type"] == 8)
        .expect("an echo flow");
    assert!(echo["icmp_id"].is_u64() && echo["icmp_quoted_protocol"].is_null());
}

#[test]
fn errors_are_said_once_in_words_and_compressed_captures_read_like_plain_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nope.pcap");
    let e = tokenize(&[
        missing.as_os_str(),
        "--out".as_ref(),
        tmp.path().join("o").as_os_str(),
    ]);
    let msg = stderr_of(&e);
    assert_eq!(e.status.code(), Some(2));
    assert_eq!(msg.matches("No such file or directory").count(), 1, "{msg}");
    // A pcapng block whose trailing length disagrees with its leading one.
    let mut ng = Vec::new();
    let shb: [u8; 28] = [
        0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 28, 0, 0, 0,
    ];
    ng.extend_from_slice(&shb);
    let idb: [u8; 20] = [1, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 4, 0, 21, 0, 0, 0];
    ng.extend_from_slice(&idb);
    let bad = tmp.path().join("bad.pcapng");
    std::fs::write(&bad, &ng).expect("write");
    let out = run_ok(
        netfm()
            .arg("tokenize")
            .arg(&bad)
            .arg(pcap("dhcp.pcap"))
            .arg("--json")
            .arg("--out")
            .arg(tmp.path().join("o2")),
    );
    let s = json_of(&out);
    let warning = s["warnings"][0]["message"]
        .as_str()
        .expect("warning")
        .to_string();
    assert!(!warning.contains("parser check"), "{warning}");
    assert!(
        warning.contains("20 bytes long at its start and 21 at its end"),
        "{warning}"
    );
    // zstd and xz captures read as the plain file does; bzip2 is named.
    let plain = std::fs::read(pcap("http_get.pcap")).expect("read");
    let zst = tmp.path().join("a.pcap.zst");
    std::fs::write(&zst, zstd::encode_all(&plain[..], 3).expect("zstd")).expect("write");
    let xz = tmp.path().join("b.pcap.xz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xz -c {} > {}",
            pcap("http_get.pcap").display(),
            xz.display()
        ))
        .status()
        .expect("xz runs");
    assert!(status.success());
    for f in [&zst, &xz] {
        let s = json_of(&run_ok(
            netfm()
                .arg("tokenize")
                .arg(f)
                .arg("--json")
                .arg("--out")
                .arg(
                    tmp.path()
                        .join(format!("out-{}", f.display().to_string().len())),
                ),
        ));
        assert_eq!(s["packets_decoded"].as_u64(), Some(14), "{}", f.display());
        assert_eq!(s["flows"].as_u64(), Some(1));
    }
    let bz = tmp.path().join("c.pcap.bz2");
    std::fs::write(&bz, b"BZh91AY&SY\x00\x00").expect("write");
    let e = tokenize(&[
        bz.as_os_str(),
        "--out".as_ref(),
        tmp.path().join("o3").as_os_str(),
    ]);
    assert!(stderr_of(&e).contains("bzip2"), "{}", stderr_of(&e));
}

/// `capture`'s records split into `parts` files named so that their names sort in another
/// order than their times (as `tcpdump -C` numbers past 9 do).
fn rotate(capture: &Path, dir: &Path, parts: usize) -> Vec<PathBuf> {
    let bytes = std::fs::read(capture).expect("read");
    let (header, mut at) = (&bytes[..24], 24);
    let mut records = Vec::new();
    while at + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4")) as usize;
        records.push(&bytes[at..at + 16 + caplen]);
        at += 16 + caplen;
    }
    let per = records.len().div_ceil(parts);
    std::fs::create_dir_all(dir).expect("mkdir");
    records
        .chunks(per)
        .enumerate()
        .map(|(k, chunk)| {
            let path = dir.join(format!("ring.pcap{}", [10, 9, 11, 8][k % 4] + k / 4 * 10));
            let mut out = header.to_vec();
            for r in chunk {
                out.extend_from_slice(r);
            }
            std::fs::write(&path, out).expect("write");
            path
        })
        .collect()
}

#[test]
fn continuous_inputs_are_one_capture_whose_flows_span_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let whole = pcap("wikipedia.pcap");
    let ring = tmp.path().join("ring");
    let parts = rotate(&whole, &ring, 3);
    let run = |args: &[&std::ffi::OsStr], name: &str| {
        let out = tmp.path().join(name);
        let mut all: Vec<&std::ffi::OsStr> = args.to_vec();
        all.extend(["--json".as_ref(), "--out".as_ref(), out.as_os_str()]);
        let s = json_of(&run_ok(netfm().arg("tokenize").args(&all)));
        (s, rows(&out))
    };
    let flows_of = |r: &[serde_json::Value]| {
        let mut v: Vec<String> = r
            .iter()
            .map(|f| {
                format!(
                    "{} {} {} {} {} {}",
                    f["src_ip"],
                    f["src_port"],
                    f["dst_ip"],
                    f["dst_port"],
                    f["protocol"],
                    f["fwd_packets"].as_u64().unwrap_or(0) + f["bwd_packets"].as_u64().unwrap_or(0)
                )
            })
            .collect();
        v.sort();
        v
    };
    let (_, one) = run(&[whole.as_os_str()], "whole");
    let (_, cut) = run(&[ring.as_os_str()], "cut");
    let (s, joined) = run(&[ring.as_os_str(), "--continuous".as_ref()], "joined");
    assert!(
        cut.len() > one.len(),
        "files cut flows ({} vs {})",
        cut.len(),
        one.len()
    );
    assert_eq!(
        flows_of(&joined),
        flows_of(&one),
        "--continuous equals the whole capture"
    );
    assert_eq!(s["files"].as_u64(), Some(parts.len() as u64));
    // Each flow names the file it began in; ids stay unique.
    let first_part = &parts[0];
    assert!(joined
        .iter()
        .any(|f| f["source"].as_str() == Some(&first_part.display().to_string())));
    let mut ids: Vec<u64> = joined
        .iter()
        .filter_map(|f| f["flow_id"].as_u64())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), joined.len());
    // Overlapping inputs are an error, leaving nothing; so is --shard.
    let out = tmp.path().join("overlap");
    let e = tokenize(&[
        ring.as_os_str(),
        whole.as_os_str(),
        "--continuous".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(e.status.code(), Some(2));
    assert!(
        stderr_of(&e).contains("overlap in time"),
        "{}",
        stderr_of(&e)
    );
    assert!(!out.exists());
    let e = tokenize(&[
        ring.as_os_str(),
        "--continuous".as_ref(),
        "--shard".as_ref(),
        "0/2".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(e.status.code(), Some(2));
    assert!(stderr_of(&e).contains("--shard"), "{}", stderr_of(&e));
}
