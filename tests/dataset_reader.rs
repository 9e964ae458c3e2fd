//! `netfm::dataset::reader` on real datasets: what `netfm tokenize` writes in both formats,
//! the Arrow files netFound itself wrote (`../shared/conformance/netfound`, or
//! `NETFM_CONFORMANCE_DIR`), and Parquet files written by Python's pyarrow.

use netfm::dataset::reader::{read_all, DatasetReader, FlowExample};
use netfm_tokenizer::{Burst, TokenLayout, TokenizedFlow};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{conformance_dir, pcaps, run_ok};

fn netfm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netfm"))
}

/// `netfm tokenize INPUT --out OUT --json -q ARGS`; returns the summary's `flows`.
fn tokenize(input: &Path, out: &Path, args: &[&str]) -> u64 {
    let o = run_ok(
        netfm()
            .arg("tokenize")
            .arg(input)
            .arg("--out")
            .arg(out)
            .args(["--json", "-q"])
            .args(args),
    );
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json summary");
    s["flows"].as_u64().expect("flows")
}

/// Runs Python code with `sys.argv[1]` = `dir`.
fn python(code: &str, dir: &Path) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .arg(dir)
        .output()
        .expect("python3 with pyarrow is needed for this test");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_ok(path: &Path) -> (Vec<FlowExample>, DatasetReader) {
    let mut r = DatasetReader::open(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    let flows = r
        .by_ref()
        .collect::<anyhow::Result<Vec<_>>>()
        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    (flows, r)
}

/// Rows compared as sets: netFound's row order follows `os.listdir`.
fn sorted(mut flows: Vec<FlowExample>) -> Vec<FlowExample> {
    flows.sort_by_cached_key(|f| format!("{f:?}"));
    flows
}

fn error_of(path: &Path) -> String {
    match DatasetReader::open(path) {
        Ok(_) => panic!("{} opened, expected an error", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bundled_captures_read_back_in_both_formats() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let native = tmp.path().join("native");
    let flows = tokenize(&pcaps(), &native, &[]);
    assert!(flows > 50, "bundled captures hold many flows, got {flows}");
    let (all, r) = read_ok(&native);
    assert_eq!(all.len() as u64, flows, "one example per flow");
    assert_eq!(r.skipped(), 0);
    let mut sorted_files = r.files().to_vec();
    sorted_files.sort();
    assert_eq!(r.files(), sorted_files.as_slice(), "files in sorted order");
    // Each part, read alone, holds its partition's protocol only; together, all flows.
    let mut per_file = 0;
    for file in r.files() {
        let part = file
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let want = match part {
            "proto=tcp" => 6,
            "proto=udp" => 17,
            "proto=icmp" => 1,
            "proto=icmpv6" => 58,
            other => panic!("unexpected partition {other}"),
        };
        let flows = read_all(file, None).expect("one part");
        assert!(flows.iter().all(|f| f.flow.protocol == want), "{part}");
        per_file += flows.len();
    }
    assert_eq!(per_file, all.len());
    // The native identity columns come along, and each flow names its dataset file.
    let mut ids = std::collections::HashSet::new();
    for f in &all {
        let id = &f.id;
        assert!(
            ids.insert(id.flow_id.expect("flow_id")),
            "flow ids are unique"
        );
        let src = id.source.as_deref().expect("source");
        assert!(src.contains("datasets/pcaps/"), "{src}");
        assert!(id.src_ip.is_some() && id.dst_ip.is_some());
        assert_eq!(
            id.src_port.is_some(),
            matches!(f.flow.protocol, 6 | 17),
            "{id:?}"
        );
        // Bundled captures are from between 1990 and 2030.
        let t = id.start_time_us.expect("start_time");
        assert!(
            (631_152_000_000_000..1_893_456_000_000_000).contains(&t),
            "{t}"
        );
        let part = r.files()[f.file].parent().and_then(|p| p.file_name());
        let want = match f.flow.protocol {
            6 => "proto=tcp",
            17 => "proto=udp",
            1 => "proto=icmp",
            _ => "proto=icmpv6",
        };
        assert_eq!(part.and_then(|p| p.to_str()), Some(want));
    }
    // Reading twice gives the same flows in the same order.
    assert_eq!(read_all(&native, None).expect("again"), all);
    assert_eq!(read_all(&native, Some(5)).expect("limit"), all[..5]);

    let nf = tmp.path().join("netfound");
    let nf_flows = tokenize(&pcaps(), &nf, &["--format", "netfound"]);
    let (nf_all, r) = read_ok(&nf);
    assert_eq!(r.files(), [nf.join("netfound-s0of1.arrows")]);
    assert_eq!(nf_all.len() as u64, nf_flows, "one example per flow");
    assert_eq!(r.skipped(), 0);
    assert!(
        nf_all.iter().all(|ex| ex.id == Default::default()),
        "netFound's schema has no identity columns"
    );
    for ex in nf_all.iter().chain(&all) {
        let f = &ex.flow;
        assert_eq!(ex.label, None);
        assert!(!f.bursts.is_empty());
        assert_eq!(
            f.packets,
            f.bursts.iter().map(|b| u64::from(b.count)).sum::<u64>()
        );
        // Every packet has its protocol's number of tokens (ICMPv6 laid out like ICMP).
        let per_packet = TokenLayout::default().tokens_per_packet(f.protocol);
        for (b, tokens) in f.bursts_with_tokens() {
            assert_eq!(tokens.len(), b.count as usize * per_packet, "{f:?}");
        }
        assert_eq!(f.tokens.len(), f.token_count());
    }
    // netFound mode lays out TCP, UDP and ICMP packets as netFound does.
    let layout = TokenLayout::default();
    for f in nf_all.iter().map(|ex| &ex.flow) {
        let per_packet = layout.tokens_per_packet(f.protocol);
        assert!(f
            .bursts_with_tokens()
            .all(|(b, t)| t.len() == b.count as usize * per_packet));
    }
}

/// A golden JSONL row (netFound's schema) as the reader should see it.
fn example_of_json(line: &str) -> FlowExample {
    let v: serde_json::Value = serde_json::from_str(line).expect("golden jsonl row");
    let list = |k: &str| v[k].as_array().expect(k).clone();
    let num = |x: &serde_json::Value| x.as_u64().expect("unsigned");
    let (tokens, dirs, bytes, iats, counts) = (
        list("burst_tokens"),
        list("directions"),
        list("bytes"),
        list("iats"),
        list("counts"),
    );
    let mut flow = TokenizedFlow {
        flow_duration_us: num(&v["flow_duration"]),
        protocol: num(&v["protocol"]) as u8,
        ..TokenizedFlow::default()
    };
    for i in 0..tokens.len() {
        let burst_tokens: Vec<u16> = tokens[i]
            .as_array()
            .expect("burst")
            .iter()
            .map(|t| num(t) as u16)
            .collect();
        let burst = Burst {
            token_len: 0,
            forward: dirs[i].as_bool().expect("bool"),
            bytes: num(&bytes[i]) as u32,
            count: num(&counts[i]) as u32,
            iat_us: num(&iats[i]),
            start_ns: 0,
        };
        flow.push_burst(burst, &burst_tokens);
    }
    flow.packets = flow.bursts.iter().map(|b| u64::from(b.count)).sum();
    FlowExample {
        flow,
        label: v["labels"].as_str().map(str::to_string),
        id: Default::default(),
        file: 0,
    }
}

fn capture_path(dir: &Path, stem: &str) -> PathBuf {
    ["pcap", "pcapng"]
        .iter()
        .map(|ext| dir.join("pcaps").join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no capture for {stem} in {}/pcaps", dir.display()))
}

#[test]
fn golden_arrow_files_read_like_netfm_netfound_output() {
    let dir = conformance_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    for (golden, jsonl, args) in [
        ("arrow", "jsonl", &[][..]),
        ("arrow_tcpopt", "jsonl_tcpopt", &["--tcp-options"][..]),
    ] {
        let mut stems: Vec<String> = fs::read_dir(dir.join(golden))
            .expect("golden arrow folder")
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                name.strip_suffix(".arrow").map(str::to_string)
            })
            .collect();
        stems.sort();
        assert_eq!(stems.len(), 36, "{golden}/");
        for stem in &stems {
            let golden_path = dir.join(golden).join(format!("{stem}.arrow"));
            let (theirs, r) = read_ok(&golden_path);
            assert_eq!(r.skipped(), 0, "{stem}");
            let theirs = sorted(theirs);
            // Our reading of pyarrow's bytes = pyarrow's own reading (the JSONL).
            let text = fs::read_to_string(dir.join(jsonl).join(format!("{stem}.jsonl")))
                .expect("golden jsonl");
            let want = sorted(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(example_of_json)
                    .collect(),
            );
            assert_eq!(theirs, want, "{golden}/{stem}.arrow vs {jsonl}");
            // `netfm tokenize --format netfound` on the same capture reads back the same.
            let out = tmp.path().join(format!("{golden}-{stem}"));
            let flows = tokenize(
                &capture_path(&dir, stem),
                &out,
                &[&["--format", "netfound"][..], args].concat(),
            );
            let ours = sorted(read_all(&out, None).expect("our netfound output"));
            assert_eq!(ours.len() as u64, flows, "{stem}");
            assert_eq!(ours, theirs, "{golden}/{stem}: netfm vs netFound");
        }
    }
}

#[test]
fn unreadable_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let native = tmp.path().join("native");
    tokenize(&pcaps().join("http_get.pcap"), &native, &[]);
    let part = DatasetReader::open(&native).expect("dataset").files()[0].clone();

    // A Parquet file cut short: its footer is gone.
    let bytes = fs::read(&part).expect("part");
    let cut = tmp.path().join("cut.parquet");
    fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let e = error_of(&cut);
    assert!(e.contains("cut.parquet"), "{e}");

    // Not a dataset at all, whatever its name says.
    let text = tmp.path().join("notes.parquet");
    fs::write(&text, "flow_duration,protocol\n1,6\n").expect("write");
    let e = error_of(&text);
    assert!(
        e.contains("notes.parquet") && e.contains("not a Parquet or Arrow IPC file"),
        "{e}"
    );
    let empty_file = tmp.path().join("empty.arrow");
    fs::write(&empty_file, "").expect("write");
    assert!(error_of(&empty_file).contains("empty.arrow"));

    // Directories without datasets: empty, or only hidden, temporary and foreign files.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    let e = error_of(&empty);
    assert!(e.contains("no Parquet or Arrow IPC dataset files"), "{e}");
    let nothing = tmp.path().join("nothing/proto=tcp");
    fs::create_dir_all(&nothing).expect("mkdir");
    fs::write(nothing.join(".part-s0of1-00000.parquet.tmp"), &bytes).expect("write");
    fs::write(nothing.join("part-s0of1-00001.parquet.tmp"), &bytes).expect("write");
    fs::write(nothing.join("_SUCCESS"), "").expect("write");
    fs::write(nothing.join("README.md"), "flows").expect("write");
    let e = error_of(nothing.parent().expect("parent"));
    assert!(e.contains("no Parquet or Arrow IPC dataset files"), "{e}");
    // ... while the same folder with one complete part reads that part only.
    fs::write(nothing.join("part-s0of1-00002.parquet"), &bytes).expect("write");
    let r = DatasetReader::open(nothing.parent().expect("parent")).expect("one part");
    assert_eq!(r.files(), [nothing.join("part-s0of1-00002.parquet")]);

    // An Arrow IPC stream cut inside its record batch: the schema reads, the batch fails.
    let golden = fs::read(conformance_dir().join("arrow/zeek_wikipedia.arrow")).expect("golden");
    let cut_ipc = tmp.path().join("cut.arrow");
    fs::write(&cut_ipc, &golden[..golden.len() - 200]).expect("write");
    let mut r = DatasetReader::open(&cut_ipc).expect("schema is intact");
    let e = r.find_map(|x| x.err()).expect("reading a cut batch fails");
    assert!(format!("{e:#}").contains("cut.arrow"), "{e:#}");
}

/// Writes, with pyarrow, Parquet and Arrow IPC files with the burst columns, an extra
/// column, and rows that are malformed in the ways a foreign producer could make them.
const PYARROW_WRITER: &str = r#"
import sys, os, pyarrow as pa, pyarrow.parquet as pq, pyarrow.ipc as ipc
out = sys.argv[1]
L = lambda t: pa.list_(t)
schema = pa.schema([
    ("flow_duration", pa.uint64()), ("protocol", pa.uint8()), ("note", pa.string()),
    ("burst_tokens", L(L(pa.uint16()))), ("directions", L(pa.bool_())),
    ("bytes", L(pa.uint32())), ("iats", L(pa.uint64())), ("counts", L(pa.uint32())),
    ("labels", pa.string()),
])
rows = [
    dict(flow_duration=1500, protocol=6, note="ok", burst_tokens=[[1, 2], [3, 4, 5, 6]],
         directions=[True, False], bytes=[40, 80], iats=[0, 0], counts=[1, 2], labels="web"),
    dict(flow_duration=7, protocol=6, note="bytes too short", burst_tokens=[[1], [2]],
         directions=[True, False], bytes=[40], iats=[0, 0], counts=[1, 1], labels="web"),
    dict(flow_duration=0, protocol=17, note="ok, unlabelled", burst_tokens=[[65535, 0, 7]],
         directions=[False], bytes=[28], iats=[12], counts=[1], labels=None),
    dict(flow_duration=9, protocol=17, note="null token", burst_tokens=[[1, None, 3]],
         directions=[True], bytes=[28], iats=[0], counts=[1], labels=None),
    dict(flow_duration=3, protocol=1, note="null counts", burst_tokens=[[8, 0]],
         directions=[True], bytes=[28], iats=[0], counts=None, labels="ping"),
]
t = pa.Table.from_pylist(rows, schema=schema)
# Each writer's defaults: Parquet snappy, Feather (Arrow IPC file) lz4; and an IPC stream
# with zstd buffers.
pq.write_table(t, os.path.join(out, "pyarrow.parquet"))
import pyarrow.feather as feather
feather.write_feather(t, os.path.join(out, "pyarrow.feather"))
opts = ipc.IpcWriteOptions(compression="zstd")
with ipc.new_stream(os.path.join(out, "pyarrow.stream"), schema, options=opts) as w:
    w.write_table(t)
# Types pyarrow infers from Python values (int64, large values that do not fit u16).
inferred = pa.Table.from_pylist([
    dict(flow_duration=5, protocol=6, burst_tokens=[[10, 20]], directions=[True],
         bytes=[52], iats=[0], counts=[1]),
    dict(flow_duration=5, protocol=6, burst_tokens=[[70000]], directions=[True],
         bytes=[52], iats=[0], counts=[1]),
    dict(flow_duration=5, protocol=300, burst_tokens=[[1]], directions=[True],
         bytes=[52], iats=[0], counts=[1]),
])
pq.write_table(inferred, os.path.join(out, "inferred.parquet"))
pq.write_table(t.drop_columns(["iats"]), os.path.join(out, "no_iats.parquet"))
"#;

fn burst(tokens: &[u16], forward: bool, bytes: u32, count: u32, iat_us: u64) -> (Burst, Vec<u16>) {
    let burst = Burst {
        token_len: 0,
        forward,
        bytes,
        count,
        iat_us,
        start_ns: 0,
    };
    (burst, tokens.to_vec())
}

fn example(
    duration: u64,
    protocol: u8,
    bursts: Vec<(Burst, Vec<u16>)>,
    label: Option<&str>,
) -> FlowExample {
    let mut flow = TokenizedFlow {
        flow_duration_us: duration,
        protocol,
        ..TokenizedFlow::default()
    };
    for (b, tokens) in bursts {
        flow.push_burst(b, &tokens);
    }
    flow.packets = flow.bursts.iter().map(|b| u64::from(b.count)).sum();
    FlowExample {
        flow,
        label: label.map(str::to_string),
        id: Default::default(),
        file: 0,
    }
}

#[test]
fn pyarrow_files_read_with_malformed_rows_skipped_and_counted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    python(PYARROW_WRITER, tmp.path());
    let want = vec![
        example(
            1500,
            6,
            vec![
                burst(&[1, 2], true, 40, 1, 0),
                burst(&[3, 4, 5, 6], false, 80, 2, 0),
            ],
            Some("web"),
        ),
        example(0, 17, vec![burst(&[65535, 0, 7], false, 28, 1, 12)], None),
    ];
    for name in ["pyarrow.parquet", "pyarrow.feather", "pyarrow.stream"] {
        let (flows, r) = read_ok(&tmp.path().join(name));
        assert_eq!(flows, want, "{name}");
        assert_eq!(
            r.skipped(),
            3,
            "{name}: bytes, null token and null counts rows"
        );
    }

    let (flows, r) = read_ok(&tmp.path().join("inferred.parquet"));
    assert_eq!(
        flows,
        vec![example(5, 6, vec![burst(&[10, 20], true, 52, 1, 0)], None)]
    );
    assert_eq!(r.skipped(), 2, "a token and a protocol out of range");

    let e = error_of(&tmp.path().join("no_iats.parquet"));
    assert!(e.contains("no_iats.parquet") && e.contains("`iats`"), "{e}");
    // One bad file fails the whole directory at open, before any training starts.
    let e = error_of(tmp.path());
    assert!(e.contains("no_iats.parquet"), "{e}");
    fs::remove_file(tmp.path().join("no_iats.parquet")).expect("rm");
    let (flows, r) = read_ok(tmp.path());
    assert_eq!(
        r.files(),
        [
            "inferred.parquet",
            "pyarrow.feather",
            "pyarrow.parquet",
            "pyarrow.stream"
        ]
        .map(|n| tmp.path().join(n))
    );
    assert_eq!(flows.len(), 1 + 3 * 2);
    assert_eq!(r.skipped(), 2 + 3 * 3);
}
