//! Writes the inference, train-step and eval graphs of a named size to a directory:
//! `cargo run -p netfm-models --example emit -- tiny OUT_DIR [f32|f64] [classes]`.

use netfm_models::export::{eval_graph, inference_graph, param_specs, train_step_graph};
use netfm_models::optim::AdamWConfig;
use netfm_models::params::init_params;
use netfm_models::{DType, ModelConfig, Objective, TrainSpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size = args.get(1).map(String::as_str).unwrap_or("tiny");
    let out = std::path::PathBuf::from(args.get(2).map(String::as_str).unwrap_or("target/emit"));
    let dtype = if args.get(3).map(String::as_str) == Some("f64") {
        DType::F64
    } else {
        DType::F32
    };
    let classes: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut cfg = ModelConfig::named(size).expect("size");
    cfg.num_classes = classes;
    std::fs::create_dir_all(&out).expect("out dir");
    let specs = param_specs(&cfg).expect("specs");
    let params = init_params(&specs, 1, dtype);
    let objective = if classes > 0 {
        Objective::Classify
    } else {
        Objective::Pretrain(Default::default())
    };
    let spec = TrainSpec {
        objective,
        adamw: AdamWConfig::default(),
        dtype,
    };
    let t = std::time::Instant::now();
    let inf = inference_graph(&cfg, &params, dtype).expect("inference");
    let train = train_step_graph(&cfg, &spec).expect("train");
    let eval = eval_graph(&cfg, &spec).expect("eval");
    eprintln!(
        "built in {:?}; train nodes {}",
        t.elapsed(),
        train.graph.as_ref().unwrap().node.len()
    );
    std::fs::write(out.join("inference.onnx"), inf.to_bytes()).unwrap();
    std::fs::write(out.join("train_step.onnx"), train.to_bytes()).unwrap();
    std::fs::write(out.join("eval.onnx"), eval.to_bytes()).unwrap();
}
