//! `netfm forecast` and `netfm loads` end to end: series from tables, counters and
//! Prometheus results with their corrections counted; the Abilene backtest's records;
//! training, saving and forecasting with netfm's model, read back by pyarrow; bad inputs
//! as clear errors; capture loads against tcpdump's frame lengths.

mod common;

use common::{fails, json_of, netfm, ok, python};
use std::path::Path;
use std::process::Command;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn series_count_their_corrections_and_refuse_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    // Out of order, a duplicate (the last kept), a missing value, two links.
    write(
        &csv,
        "timestamp,link,value\n600,a,3\n0,a,1\n300,a,2\n300,a,5\n0,b,7\n300,b,\n600,b,9\n",
    );
    let out = dir.path().join("grid.csv");
    let o = ok(netfm()
        .args(["forecast", "series", "--json", "--input"])
        .arg(&csv)
        .arg("--out")
        .arg(&out));
    let s = json_of(&o);
    assert_eq!(s["corrections"]["reordered"], 1);
    assert_eq!(s["corrections"]["duplicates"], 1);
    assert_eq!(s["corrections"]["missing_values"], 1);
    assert_eq!(s["missing"], 1);
    let grid = std::fs::read_to_string(&out).unwrap();
    assert!(grid.contains("300,a,5\n"), "{grid}");
    assert!(grid.contains("300,b,\n"), "{grid}");

    // Parquet out and back in gives the same grid.
    let pq = dir.path().join("grid.parquet");
    ok(netfm()
        .args(["forecast", "series", "--input"])
        .arg(&csv)
        .arg("--out")
        .arg(&pq));
    let again = dir.path().join("again.csv");
    ok(netfm()
        .args(["forecast", "series", "--input"])
        .arg(&pq)
        .arg("--out")
        .arg(&again));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), grid);

    // The same file again is refused without --overwrite.
    let t = fails(
        netfm()
            .args(["forecast", "series", "--input"])
            .arg(&csv)
            .arg("--out")
            .arg(&out),
    );
    assert!(t.contains("--overwrite"), "{t}");

    // A value that is not a number names its line.
    write(&csv, "timestamp,link,value\n0,a,1\n300,a,lots\n");
    let t = fails(
        netfm()
            .args(["forecast", "series", "--input"])
            .arg(&csv)
            .arg("--out")
            .arg(dir.path().join("x.csv")),
    );
    assert!(t.contains("line 3") && t.contains("not a number"), "{t}");
}

#[test]
fn counters_going_backwards_and_prometheus_results() {
    let dir = tempfile::tempdir().unwrap();
    // 64-bit octet counter every 60 s at 1000 B/s, reset to 0 after the third sample.
    let csv = dir.path().join("counter.csv");
    write(
        &csv,
        "timestamp,link,value\n0,eth0,0\n60,eth0,60000\n120,eth0,120000\n180,eth0,500\n240,eth0,60500\n",
    );
    let out = dir.path().join("rates.csv");
    let o = ok(netfm()
        .args([
            "forecast",
            "series",
            "--json",
            "--counters",
            "64",
            "--interval",
            "1m",
            "--scale",
            "8",
            "--input",
        ])
        .arg(&csv)
        .arg("--out")
        .arg(&out));
    let s = json_of(&o);
    assert_eq!(s["corrections"]["resets"], 1, "{s}");
    assert_eq!(s["corrections"]["wraps"], 0, "{s}");
    let grid = std::fs::read_to_string(&out).unwrap();
    // 8000 bit/s where known; the reset's minute is missing, not made up.
    assert!(
        grid.contains("0,eth0,8000\n") && grid.contains("120,eth0,\n"),
        "{grid}"
    );

    let prom = dir.path().join("q.json");
    write(
        &prom,
        r#"{"status":"success","data":{"resultType":"matrix","result":[
        {"metric":{"__name__":"node_network_receive_bytes_total","device":"eth0"},
         "values":[[1700000000,"4294967000"],[1700000060,"59704"],[1700000120,"119704"]]}]}}"#,
    );
    let o = ok(netfm()
        .args([
            "forecast",
            "series",
            "--json",
            "--counters",
            "32",
            "--interval",
            "1m",
            "--input",
        ])
        .arg(&prom)
        .arg("--out")
        .arg(dir.path().join("p.parquet")));
    let s = json_of(&o);
    assert_eq!(s["corrections"]["wraps"], 1, "{s}");
    let t = python(
        "import sys, pyarrow.parquet as pq\n\
         t = pq.read_table(sys.argv[1]).to_pylist()\n\
         print([(r['link'], r['value']) for r in t])",
        &[&dir.path().join("p.parquet")],
    );
    // (2^32 − 4294967000 + 59704) / 60 = 1000 B/s.
    assert!(
        t.contains("('node_network_receive_bytes_total{device=\"eth0\"}', 1000.0)"),
        "{t}"
    );
}

#[test]
fn abilene_backtest_writes_a_record_per_model_horizon_and_week() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bt.json");
    let o = ok(netfm()
        .args([
            "forecast",
            "backtest",
            "--dataset",
            "abilene",
            "--week",
            "1",
            "-q",
        ])
        .args([
            "--models",
            "naive,seasonal_naive,ets",
            "--horizons",
            "5m,1h",
            "--json",
        ])
        .arg(&json));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("| 1 | 1h | ets |"), "{table}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let recs = v["records"].as_array().unwrap();
    assert_eq!(recs.len(), 6);
    for r in recs {
        for k in [
            "model",
            "horizon",
            "week",
            "mae",
            "coverage80",
            "rmse",
            "smape",
            "mase",
        ] {
            assert!(!r[k].is_null(), "{k} missing in {r}");
        }
        // 30 links × 48 hourly origins.
        assert_eq!(r["points"], 1440);
        let mae = r["mae"].as_f64().unwrap();
        assert!(mae > 0.0 && mae.is_finite());
    }
    // Same-time-yesterday is far worse than the last value on these smooth links.
    let mae = |m: &str, h: &str| {
        recs.iter()
            .find(|r| r["model"] == m && r["horizon"] == h)
            .unwrap()["mae"]
            .as_f64()
            .unwrap()
    };
    assert!(mae("seasonal_naive", "5m") > 2.0 * mae("naive", "5m"));
    assert!(mae("naive", "1h") > mae("naive", "5m"));

    let t = fails(netfm().args([
        "forecast",
        "backtest",
        "--dataset",
        "abilene",
        "--models",
        "prophet",
    ]));
    assert!(t.contains("unknown model"), "{t}");
    let t = fails(netfm().args([
        "forecast",
        "backtest",
        "--dataset",
        "abilene",
        "--week",
        "3",
    ]));
    assert!(t.contains("--week"), "{t}");
}

#[test]
fn train_save_and_predict_with_netfm_and_a_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let small = [
        "--context",
        "48",
        "--patch",
        "12",
        "--d-model",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--steps",
        "40",
        "--batch",
        "32",
    ];
    let o = ok(netfm()
        .args([
            "forecast",
            "train",
            "--dataset",
            "abilene",
            "--train",
            "2d",
            "-q",
            "--json",
        ])
        .args(small)
        .arg("--out")
        .arg(&model));
    let s = json_of(&o);
    assert!(s["final_loss"].as_f64().unwrap().is_finite());
    assert!(model.join("model.onnx").is_file() && model.join("forecaster.json").is_file());

    // An occupied model folder is refused.
    let t = fails(
        netfm()
            .args(["forecast", "train", "--dataset", "abilene", "-q"])
            .args(small)
            .arg("--out")
            .arg(&model),
    );
    assert!(t.contains("--overwrite"), "{t}");
    // --steps 0.
    let t = fails(
        netfm()
            .args([
                "forecast",
                "train",
                "--dataset",
                "abilene",
                "-q",
                "--steps",
                "0",
                "--out",
            ])
            .arg(dir.path().join("m0")),
    );
    assert!(t.contains("--steps"), "{t}");

    let preds = dir.path().join("p.parquet");
    let plot = dir.path().join("p.png");
    let o = ok(netfm()
        .args([
            "forecast",
            "predict",
            "--dataset",
            "abilene",
            "--json",
            "--horizon",
            "1h",
            "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(&preds)
        .arg("--plot")
        .arg(&plot));
    let s = json_of(&o);
    assert_eq!(s["series"], 30);
    assert_eq!(s["horizon_steps"], 12);
    assert!(std::fs::metadata(&plot).unwrap().len() > 1000);
    let t = python(
        "import sys, pyarrow.parquet as pq\n\
         t = pq.read_table(sys.argv[1]).to_pylist()\n\
         bad = [r for r in t if not (r['q0.1'] <= r['q0.5'] <= r['q0.9'])]\n\
         print(len(t), len(set(r['link'] for r in t)), len(bad), min(r['step'] for r in t), max(r['step'] for r in t))",
        &[&preds],
    );
    assert_eq!(t.trim(), "360 30 0 1 12");

    // With a known event the model renormalizes: on the failure scenario's series, from
    // the hour after the failure, the forecasts of the links whose load moved differ.
    let failed = dir.path().join("failed.csv");
    ok(netfm()
        .args([
            "forecast",
            "series",
            "--dataset",
            "abilene",
            "--failure",
            "--out",
        ])
        .arg(&failed));
    let cut = dir.path().join("cut.csv");
    // Up to one hour after the failure (interval 1,728 + 12 of week 1).
    let keep = 1_078_099_200 + (1728 + 12) * 300;
    let rows: String = std::fs::read_to_string(&failed)
        .unwrap()
        .lines()
        .filter(|l| {
            l.starts_with("timestamp")
                || l.split(',').next().unwrap().parse::<i64>().unwrap() < keep
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write(&cut, &rows);
    let plain = dir.path().join("plain.csv");
    let adapted = dir.path().join("adapted.csv");
    for (out, event) in [
        (&plain, None),
        (&adapted, Some((1_078_099_200 + 1728 * 300).to_string())),
    ] {
        let mut c = netfm();
        c.args(["forecast", "predict", "--horizon", "1h", "--input"])
            .arg(&cut)
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(out);
        if let Some(e) = event {
            c.args(["--event", &e]);
        }
        ok(&mut c);
    }
    assert_ne!(
        std::fs::read_to_string(&plain).unwrap(),
        std::fs::read_to_string(&adapted).unwrap()
    );
    let t = fails(
        netfm()
            .args([
                "forecast",
                "predict",
                "--baseline",
                "naive",
                "--event",
                "1078099800",
                "--input",
            ])
            .arg(&cut)
            .arg("--out")
            .arg(dir.path().join("x.csv")),
    );
    assert!(t.contains("does not adapt"), "{t}");

    // Longer than the model's horizon; quantiles it was not trained for.
    let t = fails(
        netfm()
            .args([
                "forecast",
                "predict",
                "--dataset",
                "abilene",
                "--horizon",
                "2h",
                "--model",
            ])
            .arg(&model)
            .arg("--out")
            .arg(dir.path().join("x.csv")),
    );
    assert!(t.contains("longer than the model"), "{t}");
    let t = fails(
        netfm()
            .args([
                "forecast",
                "predict",
                "--dataset",
                "abilene",
                "--quantiles",
                "0.05,0.5",
                "--model",
            ])
            .arg(&model)
            .arg("--out")
            .arg(dir.path().join("x.csv")),
    );
    assert!(t.contains("quantiles"), "{t}");

    // Too little history for the model's context.
    let csv = dir.path().join("short.csv");
    let rows: String = (0..10)
        .map(|i| format!("{},x,{}\n", i * 300, 10 + i))
        .collect();
    write(&csv, &format!("timestamp,link,value\n{rows}"));
    let t = fails(
        netfm()
            .args(["forecast", "predict", "--horizon", "1h", "--input"])
            .arg(&csv)
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(dir.path().join("x.csv")),
    );
    assert!(t.contains("too little history"), "{t}");

    // A baseline fitted on the spot, as CSV; the forecast of a series that rises by one
    // each interval, by the last value, is its last value.
    let out = dir.path().join("naive.csv");
    ok(netfm()
        .args([
            "forecast",
            "predict",
            "--baseline",
            "naive",
            "--horizon",
            "15m",
            "--input",
        ])
        .arg(&csv)
        .arg("--out")
        .arg(&out));
    let got = std::fs::read_to_string(&out).unwrap();
    assert!(
        got.starts_with("link,origin,timestamp,step,q0.1,q0.5,q0.9\n"),
        "{got}"
    );
    assert!(got.contains("x,3000,3600,3,"), "{got}");
    let line = got.lines().nth(1).unwrap();
    assert_eq!(line.split(',').nth(5), Some("19"), "{got}");
}

#[test]
fn capture_loads_add_up_to_tcpdumps_frame_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let cap = common::pcaps().join("dns_long_connection.pcap");
    let out = dir.path().join("loads.csv");
    let o = ok(netfm()
        .args([
            "loads",
            "--json",
            "--interval",
            "1m",
            "--by",
            "file",
            "--out",
        ])
        .arg(&out)
        .arg(&cap));
    let s = json_of(&o);
    assert_eq!(s["not_ip"], 0);
    let mut bytes = 0.0;
    let mut packets = 0.0;
    for line in std::fs::read_to_string(&out).unwrap().lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[1], "dns_long_connection.pcap");
        bytes += f[2].parse::<f64>().unwrap() * 60.0 / 8.0;
        packets += f[3].parse::<f64>().unwrap() * 60.0;
    }
    // tcpdump -e prints each frame's length.
    let td = Command::new("tcpdump")
        .args(["-nn", "-e", "-r"])
        .arg(&cap)
        .output()
        .expect("tcpdump runs");
    let listing = String::from_utf8_lossy(&td.stdout);
    let lens: Vec<f64> = listing
        .lines()
        .filter_map(|l| {
            let at = l.find(", length ")?;
            l[at + 9..].split(':').next()?.trim().parse().ok()
        })
        .collect();
    assert!(!lens.is_empty(), "{listing}");
    assert!(
        (packets - lens.len() as f64).abs() < 1e-6,
        "{packets} vs {}",
        lens.len()
    );
    let total: f64 = lens.iter().sum();
    assert!((bytes - total).abs() < 1e-6, "{bytes} vs {total}");

    // By direction (all private or all public here): the series names are the classes.
    let o = ok(netfm()
        .args([
            "loads",
            "--json",
            "--overwrite",
            "--interval",
            "1m",
            "--out",
        ])
        .arg(&out)
        .arg(&cap));
    let names = json_of(&o)["series"].clone();
    for n in names.as_array().unwrap() {
        assert!(
            ["in", "out", "internal", "external"].contains(&n.as_str().unwrap()),
            "{names}"
        );
    }
    let t = fails(
        netfm()
            .args(["loads", "--by", "port", "--out"])
            .arg(dir.path().join("y.csv"))
            .arg(&cap),
    );
    assert!(t.contains("--by"), "{t}");
}
