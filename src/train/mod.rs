//! Training-side machinery shared by the model jobs:
//! - [`collate`]: tokenized flows to the batches the model graphs take (dense or packed);
//! - [`data`]: the run's dataset files, the split by capture file, the shuffled,
//!   length-bucketed batch stream and the thread that builds batches ahead of the step;
//! - [`eval`]: validation metrics and the baselines they are shown beside;
//! - [`metrics`]: classification metrics;
//! - [`netfound_batch`]: the batches of netFound's own model (its tokenizer and collators);
//! - [`run`]: the run folder (settings, metrics, checkpoints, resume).

pub mod collate;
pub mod data;
pub mod eval;
pub mod metrics;
pub mod netfound_batch;
pub mod run;
