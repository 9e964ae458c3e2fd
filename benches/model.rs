//! Criterion bench: the model through ONNX Runtime on CPU — train steps at `small` size and
//! batch 32 (time per step; throughput in field tokens/s), and inference at batch 1 and 64 (flows/s) — on real
//! flows: the bundled captures tokenized by netfm, richest flows (most bursts) first.
//!
//! `cargo bench --bench model`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netfm::dataset::reader::{read_all, FlowExample};
use netfm::runtime::encoder::Encoder;
use netfm::runtime::trainer::{LrSchedule, Trainer};
use netfm::runtime::RuntimeOptions;
use netfm::train::collate::{inference_batch, pretrain_batch, Layout, Masking};
use netfm_models::export::{inference_graph, param_specs, train_step_graph, Objective, TrainSpec};
use netfm_models::optim::AdamWConfig;
use netfm_models::params::{init_params, SplitMix64};
use netfm_models::{DType, ModelConfig};
use netfm_tokenizer::TokenizedFlow;
use std::hint::black_box;
use std::process::Command;
use std::time::Duration;

fn flows() -> Vec<FlowExample> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/bench-flows");
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(env!("CARGO_BIN_EXE_netfm"))
        .args(["tokenize", "-q", "--out"])
        .arg(&out)
        .arg(root.join("datasets/pcaps"))
        .status()
        .expect("run netfm tokenize");
    assert!(status.success());
    let mut flows = read_all(&out, None).expect("read flows");
    flows.sort_by_key(|f| std::cmp::Reverse(f.flow.bursts.len()));
    flows
}

fn bench_model(c: &mut Criterion) {
    let flows = flows();
    let cfg = ModelConfig::named("small").unwrap();
    let lay = Layout::of(&cfg, DType::F32);
    let params = init_params(&param_specs(&cfg).unwrap(), 1, DType::F32);
    let opts = RuntimeOptions::default();

    let batch32: Vec<&TokenizedFlow> = flows.iter().take(32).map(|f| &f.flow).collect();
    let batch = pretrain_batch(&batch32, &lay, &Masking::default(), &mut SplitMix64(1));
    let spec = TrainSpec {
        objective: Objective::Pretrain(Default::default()),
        adamw: AdamWConfig::default(),
        dtype: DType::F32,
    };
    let train = train_step_graph(&cfg, &spec).unwrap().to_bytes();
    let mut trainer = Trainer::new(&opts, &train, &params, None).unwrap();
    let lr = LrSchedule {
        peak: 1e-4,
        warmup_steps: 100,
        total_steps: 100_000,
    };
    let mut g = c.benchmark_group("train_small");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    // One step per iteration; throughput in field tokens (steps/s = 1 / time).
    g.throughput(Throughput::Elements(batch.tokens as u64));
    g.bench_function("step_batch32", |b| {
        b.iter(|| black_box(trainer.step(&batch.feeds(), &lr).unwrap()))
    });
    g.finish();
    drop(trainer);

    let inf = inference_graph(&cfg, &params, DType::F32)
        .unwrap()
        .to_bytes();
    let mut enc = Encoder::from_bytes(&opts, &inf).unwrap();
    let mut g = c.benchmark_group("inference_small");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for bs in [1usize, 64] {
        let sel: Vec<&TokenizedFlow> = flows.iter().cycle().take(bs).map(|f| &f.flow).collect();
        let b = inference_batch(&sel, &lay);
        g.throughput(Throughput::Elements(bs as u64));
        g.bench_function(format!("flows_batch{bs}"), |bch| {
            bch.iter(|| black_box(enc.run_batch(&b.feeds()).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_model);
criterion_main!(benches);
