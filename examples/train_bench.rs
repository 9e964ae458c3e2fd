//! Times `netfm`'s train step through ONNX Runtime on a batch of real flows and writes that
//! batch and the initial parameters for `benches/compare_jax.py`, which runs the same model
//! in jax on the same data.
//!
//! `cargo run --release --example train_bench -- DATASET OUT_DIR [--size small] [--batch 32]
//!  [--steps 20] [--threads N]`
//! Prints one JSON line: the first step's loss terms and the step times.

use netfm::dataset::reader::read_all;
use netfm::runtime::trainer::{LrSchedule, Trainer};
use netfm::runtime::RuntimeOptions;
use netfm::train::collate::{pretrain_batch, Layout, Masking};
use netfm_models::checkpoint::Checkpoint;
use netfm_models::export::{param_specs, train_step_graph, Objective, TrainSpec};
use netfm_models::optim::AdamWConfig;
use netfm_models::params::{init_params, SplitMix64};
use netfm_models::{DType, ModelConfig};
use netfm_tokenizer::TokenizedFlow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    let positional: Vec<&String> = {
        let mut v = Vec::new();
        let mut i = 0;
        while i < args.len() {
            if args[i].starts_with("--") {
                i += 2;
            } else {
                v.push(&args[i]);
                i += 1;
            }
        }
        v
    };
    anyhow::ensure!(
        positional.len() == 2,
        "usage: train_bench DATASET OUT_DIR [--size S] [--batch B] [--steps N] [--threads T]"
    );
    let (dataset, out) = (PathBuf::from(positional[0]), PathBuf::from(positional[1]));
    // The dense layout: benches/jax_model.py reads `input_ids` as a [flows, bursts, tokens] grid.
    let cfg = ModelConfig {
        layout: netfm_models::InputLayout::Dense,
        ..ModelConfig::named(&flag("--size", "small"))?
    };
    let batch_size: usize = flag("--batch", "32").parse()?;
    let steps: usize = flag("--steps", "20").parse()?;
    let threads: Option<usize> = args
        .iter()
        .position(|a| a == "--threads")
        .map(|_| flag("--threads", "0").parse())
        .transpose()?;

    let mut flows = read_all(&dataset, None)?;
    flows.sort_by_key(|f| std::cmp::Reverse(f.flow.bursts.len()));
    let sel: Vec<&TokenizedFlow> = flows.iter().take(batch_size).map(|f| &f.flow).collect();
    anyhow::ensure!(
        sel.len() == batch_size,
        "the dataset has only {} flows",
        sel.len()
    );
    let lay = Layout::of(&cfg, DType::F32);
    let batch = pretrain_batch(&sel, &lay, &Masking::default(), &mut SplitMix64(1));
    let params = init_params(&param_specs(&cfg)?, 1, DType::F32);

    std::fs::create_dir_all(&out)?;
    let ck = Checkpoint::new_model(cfg.clone(), DType::F32, params.clone());
    std::fs::write(out.join("params.safetensors"), ck.to_bytes())?;
    std::fs::write(out.join("batch.json"), batch.to_json().to_string())?;

    let spec = TrainSpec {
        objective: Objective::Pretrain(Default::default()),
        adamw: AdamWConfig::default(),
        dtype: DType::F32,
    };
    let t = Instant::now();
    let graph = train_step_graph(&cfg, &spec)?.to_bytes();
    let build_s = t.elapsed().as_secs_f64();
    let opts = RuntimeOptions {
        intra_threads: threads,
        ..Default::default()
    };
    let t = Instant::now();
    let mut trainer = Trainer::new(&opts, &graph, &params, None)?;
    let session_s = t.elapsed().as_secs_f64();
    let lr = LrSchedule {
        peak: 1e-4,
        warmup_steps: 10,
        total_steps: 1000,
    };
    let mut times = Vec::new();
    let mut first = None;
    for _ in 0..steps {
        let t = Instant::now();
        let r = trainer.step(&batch.feeds(), &lr)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        first.get_or_insert(r);
    }
    let first = first.expect("at least one step");
    let mut sorted = times[1..].to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(times[0]);
    println!(
        "{}",
        serde_json::json!({
            "size": cfg.size, "batch": batch_size, "tokens": batch.tokens,
            "masked": batch.get("mlm_index").map(|t| t.data.len()),
            "graph_build_s": build_s, "session_s": session_s,
            "first_losses": first.losses.iter().cloned().collect::<HashMap<_, _>>(),
            "step_ms": times, "median_ms": median,
        })
    );
    Ok(())
}
