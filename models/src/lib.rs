//! netfm-models: ONNX graphs for netfm's models, built in Rust.
//!
//! - [`graph`]: a typed graph builder over standard ONNX operators (opset 18, IR 10);
//! - [`autodiff`]: reverse-mode differentiation over it, one gradient rule per operator;
//! - [`optim`]: AdamW, gradient clipping and the learning-rate schedule as graph nodes;
//! - [`hier`]: the netFound-style hierarchical encoder and its heads and losses;
//! - [`forecaster`]: a patch-based transformer forecaster of link loads with quantile outputs;
//! - [`export`]: the `inference`, `train_step` and `eval` graphs of one model definition
//!   (the forecaster builds its own in [`forecaster`], with the same train-step contract);
//! - [`checkpoint`]: parameters, optimizer state, step and config in a safetensors file;
//! - [`proto`]: the ONNX protobuf messages, written here (no protoc at build time).
//!
//! Pure: it emits ONNX bytes and runs nothing; netfm's `runtime` module runs them.

pub mod autodiff;
pub mod checkpoint;
pub mod config;
pub mod export;
pub mod forecaster;
pub mod graph;
pub mod hier;
pub mod netfound_config;
pub mod optim;
pub mod params;
pub mod proto;
pub mod safetensors;

pub use config::{InputLayout, ModelConfig, VocabSpec};
pub use export::{
    eval_graph, inference_graph, param_specs, train_step_graph, Objective, TrainSpec,
};
pub use forecaster::{
    forecast_eval_graph, forecast_gradient_graph, forecast_inference_graph, forecast_init_params,
    forecast_param_specs, forecast_train_step_graph, ForecastConfig, ForecastConfigError,
    ForecastError,
};
pub use graph::{DType, Data, Dim, Graph, Tensor, V};
