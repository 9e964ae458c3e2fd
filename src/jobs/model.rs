//! Finding and checking the model a job runs: a run folder (`pretrain --out`,
//! `finetune --out`) or a checkpoint file, checked against this netfm's tokenizer.

use crate::train::run::{load_checkpoint, read_json, CHECKPOINT_FILE, RUN_FILE};
use anyhow::{bail, Context};
use netfm_models::checkpoint::Checkpoint;
use netfm_models::export::param_specs;
use netfm_models::VocabSpec;
use std::path::{Path, PathBuf};

/// A model to run.
pub struct LoadedModel {
    pub checkpoint: Checkpoint,
    /// The checkpoint file read.
    pub path: PathBuf,
    /// The run folder's `run.json`, when the model came from one.
    pub run: Option<serde_json::Value>,
}

impl LoadedModel {
    /// The classifier's class names (a fine-tuned run's), in head order.
    pub fn class_names(&self) -> Option<Vec<String>> {
        let names = self.run.as_ref()?.get("classes")?.as_array()?;
        names
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect()
    }
}

/// Loads `path`: a run folder holding `checkpoint.safetensors`, or a checkpoint file. The
/// checkpoint's config must be valid, use this netfm's vocabulary, and its parameters must
/// be exactly the ones its config asks for.
pub fn load(path: &Path) -> anyhow::Result<LoadedModel> {
    let (file, run) = if path.is_dir() {
        let file = path.join(CHECKPOINT_FILE);
        if !file.is_file() {
            bail!(
                "{}: no {CHECKPOINT_FILE} here (a `netfm pretrain` or `netfm finetune` run folder has one)",
                path.display()
            );
        }
        let run = path.join(RUN_FILE);
        let run = if run.is_file() {
            Some(read_json(&run)?)
        } else {
            None
        };
        (file, run)
    } else {
        (path.to_path_buf(), None)
    };
    let ck = load_checkpoint(&file)?;
    ck.config
        .validate()
        .with_context(|| format!("{}: the model's config", file.display()))?;
    let ours = VocabSpec::netfound();
    if ck.config.vocab != ours {
        bail!(
            "{}: the model was built for another tokenizer vocabulary ({:?}); this netfm tokenizes into {:?}",
            file.display(),
            ck.config.vocab,
            ours
        );
    }
    let specs = param_specs(&ck.config)?;
    let mut problems = Vec::new();
    for s in &specs {
        match ck.params.get(&s.name) {
            None => problems.push(format!("{} missing", s.name)),
            Some(t) if t.dims != s.dims => problems.push(format!(
                "{}: {:?} where the config needs {:?}",
                s.name, t.dims, s.dims
            )),
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}: the parameters do not fit the model's config ({} hidden, {} layers): {}",
            file.display(),
            ck.config.hidden,
            ck.config.layers,
            problems
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(LoadedModel {
        checkpoint: ck,
        path: file,
        run,
    })
}
