//! The model graphs end to end through ONNX Runtime: a whole-model gradient check, forward
//! parity between the inference, eval and train-step graphs, the overfit test on real
//! tokenized flows, checkpoint resume, clear errors for wrong parameters and vocabularies,
//! and Python's `onnx` checker and `onnxruntime` as consumers of the exported models.

use netfm::dataset::reader::{read_all, FlowExample};
use netfm::runtime::encoder::Encoder;
use netfm::runtime::trainer::{LrSchedule, Trainer};
use netfm::runtime::{host, session_from_bytes, OptimizationLevel, RuntimeOptions};
use netfm::train::collate::{pretrain_batch, Batch, Layout, Masking};
use netfm_models::checkpoint::Checkpoint;
use netfm_models::export::{
    eval_graph, gradient_graph, inference_graph, param_specs, train_step_graph, Objective,
    TrainSpec,
};
use netfm_models::optim::{AdamWConfig, Schedule};
use netfm_models::params::{init_params, SplitMix64};
use netfm_models::{DType, Data, InputLayout, ModelConfig, Tensor};
use netfm_tokenizer::TokenizedFlow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Real flows: the bundled captures tokenized by netfm (once per test process), the flows
/// with the most bursts first (ties by order read).
fn real_flows() -> &'static [FlowExample] {
    static FLOWS: OnceLock<Vec<FlowExample>> = OnceLock::new();
    FLOWS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("ds");
        let status = Command::new(env!("CARGO_BIN_EXE_netfm"))
            .args(["tokenize", "-q", "--out"])
            .arg(&out)
            .arg(repo().join("datasets/pcaps"))
            .status()
            .expect("run netfm tokenize");
        assert!(status.success(), "netfm tokenize failed");
        let mut flows = read_all(&out, None).expect("read the dataset back");
        flows.sort_by_key(|f| std::cmp::Reverse(f.flow.bursts.len()));
        flows
    })
}

fn tiny() -> ModelConfig {
    ModelConfig::named("tiny").unwrap()
}

fn spec(dtype: DType, schedule: Schedule) -> TrainSpec {
    TrainSpec {
        objective: Objective::Pretrain(Default::default()),
        adamw: AdamWConfig {
            schedule,
            ..AdamWConfig::default()
        },
        dtype,
    }
}

fn batch_of(cfg: &ModelConfig, flows: &[FlowExample], dtype: DType, seed: u64) -> Batch {
    let refs: Vec<&TokenizedFlow> = flows.iter().map(|f| &f.flow).collect();
    pretrain_batch(
        &refs,
        &Layout::of(cfg, dtype),
        &Masking::default(),
        &mut SplitMix64(seed),
    )
}

fn opts(level: OptimizationLevel, threads: usize) -> RuntimeOptions {
    RuntimeOptions {
        intra_threads: Some(threads),
        optimization: level,
        ..Default::default()
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    match &t.data {
        Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
        Data::F64(v) => v.clone(),
        Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
        Data::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims, b.dims);
    values(a)
        .iter()
        .zip(values(b))
        .fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Whole-model gradient check at `tiny` size in float64 (tolerance argued in
/// tests/gradients.rs): for every parameter, its largest-gradient entry and its middle entry
/// against central differences of the total pretraining loss.
#[test]
fn whole_model_gradients_match_finite_differences() {
    let cfg = tiny();
    let flows = &real_flows()[..2];
    let batch = batch_of(&cfg, flows, DType::F64, 11);
    let sp = spec(DType::F64, Schedule::Constant);
    let o = opts(OptimizationLevel::Disabled, 2);
    let mut grad_session =
        session_from_bytes(&o, &gradient_graph(&cfg, &sp).unwrap().to_bytes()).unwrap();
    // Finite differences need only the loss: the eval graph (no backward pass) gives it.
    let mut loss_session =
        session_from_bytes(&o, &eval_graph(&cfg, &sp).unwrap().to_bytes()).unwrap();
    let specs = param_specs(&cfg).unwrap();
    let mut params = init_params(&specs, 5, DType::F64);
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    fn feeds_of<'a>(
        batch: &'a Batch,
        names: &'a [String],
        params: &'a HashMap<String, Tensor>,
    ) -> Vec<(&'a str, &'a Tensor)> {
        let mut feeds = batch.feeds();
        for n in names {
            feeds.push((n.as_str(), &params[n]));
        }
        feeds
    }
    let out = host::run(&mut grad_session, &feeds_of(&batch, &names, &params)).unwrap();
    let mut run = |params: &HashMap<String, Tensor>| {
        host::run(&mut loss_session, &feeds_of(&batch, &names, params)).unwrap()
    };
    let (h, tol) = (1e-5, 1e-6);
    let mut checked = 0;
    for name in &names {
        let an = values(&out[&format!("grad.{name}")]);
        let scale = an.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let mut order: Vec<usize> = (0..an.len()).collect();
        order.sort_by(|&a, &b| an[b].abs().total_cmp(&an[a].abs()));
        let picks = [order[0], an.len() / 2];
        for &j in &picks {
            let orig = values(&params[name])[j];
            let mut at = |x: f64| {
                if let Data::F64(v) = &mut params.get_mut(name).unwrap().data {
                    v[j] = x;
                }
                host::scalar(&run(&params)["loss"]).unwrap()
            };
            let (up, down) = (at(orig + h), at(orig - h));
            at(orig);
            let fd = (up - down) / (2.0 * h);
            assert!(
                (fd - an[j]).abs() <= tol * scale,
                "{name}[{j}]: analytic {} vs finite difference {fd}",
                an[j]
            );
            checked += 1;
        }
    }
    assert!(checked >= 2 * 60, "checked {checked} entries");
}

/// The inference graph (parameters baked in), the eval graph and the first train step
/// compute the same forward pass on the same batch.
#[test]
fn inference_eval_and_train_step_agree() {
    let cfg = tiny();
    let flows = &real_flows()[..4];
    let batch = batch_of(&cfg, flows, DType::F32, 3);
    let specs = param_specs(&cfg).unwrap();
    let params = init_params(&specs, 9, DType::F32);
    let o = opts(OptimizationLevel::All, 2);
    let sp = spec(DType::F32, Schedule::Cosine);

    let inf = inference_graph(&cfg, &params, DType::F32)
        .unwrap()
        .to_bytes();
    let mut enc = Encoder::from_bytes(&o, &inf).unwrap();
    let inf_out = enc.run_batch(&batch.feeds()).unwrap();

    let eval = eval_graph(&cfg, &sp).unwrap().to_bytes();
    let mut es = session_from_bytes(&o, &eval).unwrap();
    let mut feeds = batch.feeds();
    for s in &specs {
        feeds.push((s.name.as_str(), &params[&s.name]));
    }
    let eval_out = host::run(&mut es, &feeds).unwrap();
    for head in ["swap_logits", "direction_logits", "meta_pred"] {
        let d = max_abs_diff(&inf_out[head], &eval_out[head]);
        assert!(d < 1e-5, "{head}: inference and eval differ by {d}");
    }

    let train = train_step_graph(&cfg, &sp).unwrap().to_bytes();
    let mut trainer = Trainer::new(&o, &train, &params, None).unwrap();
    let lr = LrSchedule {
        peak: 1e-3,
        warmup_steps: 10,
        total_steps: 100,
    };
    let report = trainer.step(&batch.feeds(), &lr).unwrap();
    for (name, value) in &report.losses {
        let e = host::scalar(&eval_out[name]).unwrap();
        assert!(
            (value - e).abs() <= 1e-5 * e.abs().max(1.0),
            "{name}: train step {value} vs eval {e}"
        );
    }
    assert!(
        (report.lr - 1e-4).abs() < 1e-9,
        "warmup step 1 of 10: lr {}",
        report.lr
    );
    // The update moved the parameters.
    let after = trainer.params().unwrap();
    assert!(max_abs_diff(&after["head.swap.w"], &params["head.swap.w"]) > 0.0);
}

/// The dense and the packed layout compute the same function of the same parameters: on
/// real flows, the same embeddings and head outputs, the same loss terms for the same
/// corruption seed, and the same gradients, in float64; the packed batch computes fewer
/// slots.
#[test]
fn dense_and_packed_layouts_agree() {
    let packed = tiny();
    assert_eq!(packed.layout, InputLayout::Packed, "packed is the default");
    let dense = ModelConfig {
        layout: InputLayout::Dense,
        ..tiny()
    };
    // Flows of different lengths, so both layouts have padding to drop.
    let all = real_flows();
    let flows: Vec<FlowExample> = [0, 3, all.len() / 2, all.len() - 1, 7, 12]
        .iter()
        .map(|&i| all[i].clone())
        .collect();
    let specs = param_specs(&packed).unwrap();
    assert_eq!(specs, param_specs(&dense).unwrap(), "one parameter list");
    let params = init_params(&specs, 21, DType::F64);
    let o = opts(OptimizationLevel::Disabled, 2);
    let sp = spec(DType::F64, Schedule::Constant);
    let refs: Vec<&TokenizedFlow> = flows.iter().map(|f| &f.flow).collect();
    let run_all = |cfg: &ModelConfig| {
        let lay = Layout::of(cfg, DType::F64);
        let plain = netfm::train::collate::inference_batch(&refs, &lay);
        let inf = inference_graph(cfg, &params, DType::F64)
            .unwrap()
            .to_bytes();
        let inf_out = Encoder::from_bytes(&o, &inf)
            .unwrap()
            .run_batch(&plain.feeds())
            .unwrap();
        let batch = pretrain_batch(&refs, &lay, &Masking::default(), &mut SplitMix64(8));
        let mut gs = session_from_bytes(&o, &gradient_graph(cfg, &sp).unwrap().to_bytes()).unwrap();
        let mut feeds = batch.feeds();
        for s in &specs {
            feeds.push((s.name.as_str(), &params[&s.name]));
        }
        let grads = host::run(&mut gs, &feeds).unwrap();
        (plain, inf_out, grads)
    };
    let (pb, p_inf, p_grad) = run_all(&packed);
    let (db, d_inf, d_grad) = run_all(&dense);
    assert!(
        pb.slots < db.slots && pb.slots * 10 <= pb.real_tokens() * 13,
        "packed {} slots vs dense {} for {} real tokens",
        pb.slots,
        db.slots,
        pb.real_tokens()
    );
    let d = max_abs_diff(&p_inf["embedding"], &d_inf["embedding"]);
    assert!(d < 1e-9, "embeddings differ by {d}");
    // Per-burst outputs: packed burst k is dense (burst_flow[k], burst_pos[k]).
    let Data::I64(bf) = &pb.get("burst_flow").unwrap().data else {
        panic!()
    };
    let Data::I64(bp) = &pb.get("burst_pos").unwrap().data else {
        panic!()
    };
    let n = db.get("input_ids").unwrap().dims[1] as usize;
    for head in ["swap_logits", "direction_logits", "burst_embeddings"] {
        let (pv, dv) = (values(&p_inf[head]), values(&d_inf[head]));
        let width = pv.len() / pb.bursts;
        for k in 0..pb.bursts {
            let at = (bf[k] as usize * n + bp[k] as usize) * width;
            for j in 0..width {
                let e = (pv[k * width + j] - dv[at + j]).abs();
                assert!(e < 1e-9, "{head} of burst {k} differs by {e}");
            }
        }
    }
    for name in Objective::Pretrain(Default::default()).loss_names() {
        let (a, b) = (
            host::scalar(&p_grad[name]).unwrap(),
            host::scalar(&d_grad[name]).unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-9 * b.abs().max(1.0),
            "{name}: packed {a} vs dense {b}"
        );
    }
    for s in &specs {
        let key = format!("grad.{}", s.name);
        let scale = values(&d_grad[&key])
            .iter()
            .fold(1e-12f64, |m, x| m.max(x.abs()));
        let e = max_abs_diff(&p_grad[&key], &d_grad[&key]);
        assert!(
            e <= 1e-7 * scale,
            "{key}: packed and dense gradients differ by {e} (scale {scale})"
        );
    }
}

/// On a fixed batch of 8 real flows, 300 AdamW steps at `tiny` size cut the pretraining
/// loss by more than 90%; the same seed gives the same losses bit for bit.
#[test]
fn train_step_overfits_a_fixed_batch_of_real_flows() {
    let cfg = tiny();
    let flows = &real_flows()[..8];
    let batch = batch_of(&cfg, flows, DType::F32, 21);
    let params = init_params(&param_specs(&cfg).unwrap(), 1, DType::F32);
    let train = train_step_graph(&cfg, &spec(DType::F32, Schedule::Constant))
        .unwrap()
        .to_bytes();
    let o = opts(OptimizationLevel::All, 2);
    let lr = LrSchedule {
        peak: 5e-3,
        warmup_steps: 20,
        total_steps: 300,
    };
    let mut trainer = Trainer::new(&o, &train, &params, None).unwrap();
    let mut losses = Vec::new();
    for _ in 0..300 {
        losses.push(trainer.step(&batch.feeds(), &lr).unwrap().loss());
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    eprintln!(
        "overfit: loss {first:.4} -> {last:.4} ({:.1}% lower)",
        100.0 * (1.0 - last / first)
    );
    assert!(
        last <= 0.1 * first,
        "loss {first} -> {last}: less than a 90% drop"
    );

    let mut again = Trainer::new(&o, &train, &params, None).unwrap();
    for (i, want) in losses.iter().take(5).enumerate() {
        let got = again.step(&batch.feeds(), &lr).unwrap().loss();
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "step {} differs between identical runs",
            i + 1
        );
    }
}

/// A checkpoint written after 3 steps and loaded into a new trainer continues exactly as
/// an uninterrupted run.
#[test]
fn checkpoint_resume_continues_the_same_run() {
    let cfg = tiny();
    let flows = &real_flows()[..4];
    let batches: Vec<Batch> = (0..6)
        .map(|i| batch_of(&cfg, flows, DType::F32, 100 + i))
        .collect();
    let params = init_params(&param_specs(&cfg).unwrap(), 2, DType::F32);
    let train = train_step_graph(&cfg, &spec(DType::F32, Schedule::Cosine))
        .unwrap()
        .to_bytes();
    let o = opts(OptimizationLevel::All, 1);
    let lr = LrSchedule {
        peak: 1e-3,
        warmup_steps: 2,
        total_steps: 6,
    };

    let mut whole = Trainer::new(&o, &train, &params, None).unwrap();
    let full: Vec<f64> = batches
        .iter()
        .map(|b| whole.step(&b.feeds(), &lr).unwrap().loss())
        .collect();

    let mut first = Trainer::new(&o, &train, &params, None).unwrap();
    for b in &batches[..3] {
        first.step(&b.feeds(), &lr).unwrap();
    }
    let state = first.optimizer_state().unwrap();
    let ck = Checkpoint {
        config: cfg.clone(),
        dtype: DType::F32,
        step: state.step,
        params: first.params().unwrap(),
        adam_m: state.m,
        adam_v: state.v,
    };
    let ck = Checkpoint::from_bytes(&ck.to_bytes()).unwrap();
    let state = netfm::runtime::trainer::OptimizerState {
        m: ck.adam_m,
        v: ck.adam_v,
        step: ck.step,
    };
    let mut resumed = Trainer::new(&o, &train, &ck.params, Some(&state)).unwrap();
    for (i, b) in batches[3..].iter().enumerate() {
        let got = resumed.step(&b.feeds(), &lr).unwrap();
        assert_eq!(got.step, 4 + i as u64);
        assert_eq!(
            got.loss().to_bits(),
            full[3 + i].to_bits(),
            "step {} after resume",
            4 + i
        );
    }
    let (a, b) = (resumed.params().unwrap(), whole.params().unwrap());
    for (k, t) in &a {
        assert_eq!(max_abs_diff(t, &b[k]), 0.0, "{k} after resume");
    }
}

#[test]
fn wrong_parameters_and_vocabularies_are_clear_errors() {
    let cfg = tiny();
    let specs = param_specs(&cfg).unwrap();
    let mut params = init_params(&specs, 1, DType::F32);
    let train = train_step_graph(&cfg, &spec(DType::F32, Schedule::Cosine))
        .unwrap()
        .to_bytes();
    let o = opts(OptimizationLevel::All, 1);
    params.get_mut("head.swap.w").unwrap().dims = vec![1, 32];
    params.remove("embed.ln.gamma");
    let err = format!(
        "{:#}",
        Trainer::new(&o, &train, &params, None)
            .err()
            .expect("must fail")
    );
    assert!(
        err.contains("head.swap.w") && err.contains("embed.ln.gamma"),
        "{err}"
    );

    // An inference model built for another vocabulary.
    let mut other = cfg.clone();
    other.vocab.size = 70000;
    other.vocab.mask = 66000;
    let p = init_params(&param_specs(&other).unwrap(), 1, DType::F32);
    let inf = inference_graph(&other, &p, DType::F32).unwrap().to_bytes();
    let err = format!(
        "{:#}",
        Encoder::from_bytes(&o, &inf).err().expect("must fail")
    );
    assert!(err.contains("vocabulary"), "{err}");
    // A train-step model where an inference model is expected, and garbage.
    let err = format!(
        "{:#}",
        Encoder::from_bytes(&o, &train).err().expect("must fail")
    );
    assert!(err.contains("not a netfm inference model"), "{err}");
    assert!(Encoder::from_bytes(&o, b"\x08\x07garbage").is_err());
    // Inference export with a missing parameter.
    let mut p2 = init_params(&specs, 1, DType::F32);
    p2.remove("head.meta.b");
    let err = inference_graph(&cfg, &p2, DType::F32)
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("head.meta.b"), "{err}");
}

/// Python's `onnx.checker` (full check) accepts all three graphs, and Python's
/// `onnxruntime` reproduces netfm's inference outputs and first train step.
#[test]
fn python_onnx_and_onnxruntime_accept_the_exported_models() {
    let cfg = tiny();
    let flows = &real_flows()[..4];
    let batch = batch_of(&cfg, flows, DType::F32, 5);
    let specs = param_specs(&cfg).unwrap();
    let params = init_params(&specs, 4, DType::F32);
    let sp = spec(DType::F32, Schedule::Cosine);
    let o = opts(OptimizationLevel::All, 2);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let inf = inference_graph(&cfg, &params, DType::F32)
        .unwrap()
        .to_bytes();
    let train = train_step_graph(&cfg, &sp).unwrap().to_bytes();
    std::fs::write(d.join("inference.onnx"), &inf).unwrap();
    std::fs::write(d.join("train_step.onnx"), &train).unwrap();
    std::fs::write(
        d.join("eval.onnx"),
        eval_graph(&cfg, &sp).unwrap().to_bytes(),
    )
    .unwrap();
    let ck = Checkpoint::new_model(cfg.clone(), DType::F32, params.clone());
    std::fs::write(d.join("params.safetensors"), ck.to_bytes()).unwrap();
    std::fs::write(d.join("batch.json"), batch.to_json().to_string()).unwrap();

    let mut enc = Encoder::from_bytes(&o, &inf).unwrap();
    let out = enc.run_batch(&batch.feeds()).unwrap();
    let mut trainer = Trainer::new(&o, &train, &params, None).unwrap();
    let lr = LrSchedule {
        peak: 1e-3,
        warmup_steps: 0,
        total_steps: 100,
    };
    let report = trainer.step(&batch.feeds(), &lr).unwrap();
    let new_params = trainer.params().unwrap();
    let expect = serde_json::json!({
        "inference": out.iter().map(|(k, t)| (k.clone(), values(t))).collect::<HashMap<_, _>>(),
        "loss": report.loss(),
        "new.head.swap.w": values(&new_params["head.swap.w"]),
        "lr": 1e-3, "warmup_steps": 0.0, "total_steps": 100.0,
    });
    std::fs::write(d.join("expect.json"), serde_json::to_vec(&expect).unwrap()).unwrap();

    let py = Command::new("python3")
        .arg(repo().join("tests/python/check_models.py"))
        .arg(d)
        .output()
        .expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );
    assert!(py.status.success(), "python check failed:\n{text}");
    assert!(text.contains("all checks passed"), "{text}");
}

/// `netfm model export`: a new model's files load (inference through the Encoder, the
/// checkpoint back into its parameters), a checkpoint re-exports, bad flags are clear errors.
#[test]
fn model_export_writes_loadable_models() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny");
    let bin = env!("CARGO_BIN_EXE_netfm");
    let run = |args: &[&str]| Command::new(bin).args(args).output().expect("run netfm");
    let o = run(&[
        "model",
        "export",
        "--size",
        "tiny",
        "--classes",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "inference.onnx",
        "train_step.onnx",
        "eval.onnx",
        "config.json",
        "checkpoint.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let ck = Checkpoint::from_bytes(&std::fs::read(out.join("checkpoint.safetensors")).unwrap())
        .unwrap();
    assert_eq!(ck.config.num_classes, 3);
    let ro = opts(OptimizationLevel::All, 1);
    let mut enc =
        Encoder::from_bytes(&ro, &std::fs::read(out.join("inference.onnx")).unwrap()).unwrap();
    let flows: Vec<&TokenizedFlow> = real_flows()[..2].iter().map(|f| &f.flow).collect();
    let res = enc.run(&flows).unwrap();
    assert_eq!(res["class_logits"].dims, vec![2, 3]);
    assert_eq!(res["embedding"].dims, vec![2, 32]);

    // Re-export from the checkpoint: same inference outputs.
    let again = dir.path().join("again");
    let o = run(&[
        "model",
        "export",
        "--checkpoint",
        out.join("checkpoint.safetensors").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut enc2 =
        Encoder::from_bytes(&ro, &std::fs::read(again.join("inference.onnx")).unwrap()).unwrap();
    assert_eq!(
        max_abs_diff(&enc2.run(&flows).unwrap()["embedding"], &res["embedding"]),
        0.0
    );

    // A new 5-class head on the checkpoint's encoder: same embeddings, new logits.
    let head = dir.path().join("head");
    let ck_path = out.join("checkpoint.safetensors");
    let o = run(&[
        "model",
        "export",
        "--checkpoint",
        ck_path.to_str().unwrap(),
        "--classes",
        "5",
        "--out",
        head.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut enc3 =
        Encoder::from_bytes(&ro, &std::fs::read(head.join("inference.onnx")).unwrap()).unwrap();
    let res3 = enc3.run(&flows).unwrap();
    assert_eq!(res3["class_logits"].dims, vec![2, 5]);
    assert_eq!(max_abs_diff(&res3["embedding"], &res["embedding"]), 0.0);
    // Flags that a checkpoint fixes are errors with it, not silently ignored.
    for flag in [
        ["--max-bursts", "3"],
        ["--dtype", "f64"],
        ["--size", "small"],
    ] {
        let o = run(&[
            "model",
            "export",
            "--checkpoint",
            ck_path.to_str().unwrap(),
            flag[0],
            flag[1],
            "--out",
            dir.path().join("y").to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{flag:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("cannot apply with --checkpoint"));
    }

    let o = run(&[
        "model",
        "export",
        "--size",
        "huge",
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown model size"));
    std::fs::write(dir.path().join("bad.safetensors"), b"not a checkpoint").unwrap();
    let o = run(&[
        "model",
        "export",
        "--checkpoint",
        dir.path().join("bad.safetensors").to_str().unwrap(),
        "--out",
        dir.path().join("y").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.safetensors"));
}
