//! `netfm model import --netfound DIR --out RUN_DIR`: a netFound checkpoint (Hugging Face
//! layout: `config.json` + `model.safetensors`, or a sharded `model.safetensors.index.json`
//! with its shards, as `save_pretrained` writes them) into a netfm model folder that
//! `embed`, `finetune`, `predict`, `pretrain --resume`-style continuation and `export` use.
//!
//! What is checked (refused with the key named): the config (netfm-models'
//! `NetfoundConfig::from_hf_json`: netFound's model type and the architecture switches netfm
//! implements), every expected key present with its shape, no unexpected key, float dtypes
//! (F32 as is, F16/BF16 widened exactly), all values finite. Tolerated: the dead burst-position
//! table under any number of layer names (one is kept), a missing token-type table (never
//! used; zeros), `lm_head.decoder.bias` (an alias of `lm_head.bias`), `lm_head.decoder.weight`
//! (must equal the tied word embeddings), and `pooler` / `position_ids` keys, which netFound
//! ignores too.
//!
//! The folder holds `checkpoint.safetensors` (the weights under netFound's names, step 0, no
//! optimizer state), `run.json` (source, its config, dtypes, parameter count, class names of
//! a fine-tuned model) and `netfound_config.json` (the source's `config.json` as read).

use crate::cli::ModelImportArgs;
use crate::train::run::{RunDir, RunMode, RUN_FILE};
use anyhow::{bail, Context};
use netfm_models::checkpoint::Checkpoint;
use netfm_models::netfound_config::{NetfoundConfig, BASE};
use netfm_models::safetensors;
use netfm_models::{DType, Data, Tensor};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct ImportSummary {
    pub source: PathBuf,
    pub out: PathBuf,
    /// `language-model` or `fine-tuned`.
    pub kind: String,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub classes: Vec<String>,
    pub params: usize,
    pub tensors: usize,
    /// Source dtypes and how many tensors had each.
    pub source_dtypes: BTreeMap<String, usize>,
    /// Keys read but not used by any output (dead tables, aliases), and keys ignored.
    pub tolerated: Vec<String>,
    /// Whether the stored rotary tables equal the sinusoid formula (informational: netFound's
    /// own initialisation overwrites them with random values).
    pub rotary_is_sinusoid: bool,
    pub elapsed_s: f64,
}

/// Reads the checkpoint's tensors: one file, or the shards an index names.
fn read_tensors(
    dir: &Path,
) -> anyhow::Result<(BTreeMap<String, Tensor>, BTreeMap<String, String>)> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if single.is_file() {
        vec![single]
    } else if index.is_file() {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&index).with_context(|| format!("reading {}", index.display()))?,
        )
        .with_context(|| format!("{} is not valid JSON", index.display()))?;
        let map = v["weight_map"]
            .as_object()
            .with_context(|| format!("{}: no weight_map", index.display()))?;
        let mut shards: Vec<String> = map
            .values()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .with_context(|| {
                format!("{}: a weight_map entry is not a file name", index.display())
            })?;
        shards.sort();
        shards.dedup();
        shards
            .into_iter()
            .map(|s| {
                if s.contains('/') || s.contains("..") {
                    bail!(
                        "{}: shard {s:?} is not a file in the folder",
                        index.display()
                    );
                }
                Ok(dir.join(s))
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        bail!(
            "{}: no model.safetensors (or model.safetensors.index.json) here; a netFound checkpoint folder holds config.json and model.safetensors",
            dir.display()
        );
    };
    let mut tensors = BTreeMap::new();
    let mut dtypes = BTreeMap::new();
    for f in files {
        let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        let st = safetensors::parse(&bytes).with_context(|| format!("{}", f.display()))?;
        for (k, t) in st.tensors {
            if tensors.insert(k.clone(), t).is_some() {
                bail!("{}: {k} appears in two shards", f.display());
            }
        }
        dtypes.extend(st.source_dtypes);
    }
    Ok((tensors, dtypes))
}

/// Whether the stored rotary table `t: [rows, d]` is RoFormer's sinusoid (sin in the first
/// half, cos in the second, frequencies 10000^(−2i/d)).
fn is_sinusoid(t: &Tensor) -> bool {
    let (Some(&rows), Some(&d), Data::F32(v)) = (t.dims.first(), t.dims.get(1), &t.data) else {
        return false;
    };
    let (rows, d) = (rows as usize, d as usize);
    (0..rows).all(|p| {
        (0..d / 2).all(|i| {
            let angle = p as f64 / 10000f64.powf(2.0 * i as f64 / d as f64);
            ((v[p * d + i] as f64) - angle.sin()).abs() < 1e-4
                && ((v[p * d + d / 2 + i] as f64) - angle.cos()).abs() < 1e-4
        })
    })
}

/// Maps the source's tensors onto the model's parameters.
pub fn map_params(
    cfg: &NetfoundConfig,
    mut tensors: BTreeMap<String, Tensor>,
) -> anyhow::Result<(HashMap<String, Tensor>, Vec<String>)> {
    let specs = cfg.param_specs();
    let mut tolerated = Vec::new();
    let mut params = HashMap::new();
    // Aliases and ignored keys first.
    if let Some(b) = tensors.remove("lm_head.decoder.bias") {
        match tensors.get("lm_head.bias") {
            Some(a) if a != &b => bail!(
                "lm_head.decoder.bias differs from lm_head.bias (they are one tensor in netFound)"
            ),
            Some(_) => {}
            None => {
                tensors.insert("lm_head.bias".into(), b);
            }
        }
        tolerated.push("lm_head.decoder.bias (alias of lm_head.bias)".into());
    }
    if let Some(w) = tensors.remove("lm_head.decoder.weight") {
        let emb = format!("{BASE}embeddings.word_embeddings.weight");
        if tensors.get(&emb) != Some(&w) {
            bail!("lm_head.decoder.weight differs from {emb}: the decoder is tied to the word embeddings in the models netfm implements");
        }
        tolerated.push("lm_head.decoder.weight (tied to the word embeddings)".into());
    }
    let ignored: Vec<String> = tensors
        .keys()
        .filter(|k| k.contains("pooler") || k.ends_with("position_ids"))
        .cloned()
        .collect();
    for k in ignored {
        tensors.remove(&k);
        tolerated.push(format!("{k} (ignored, as netFound does)"));
    }
    // The dead burst-position table: tied across layers, stored under one or more names.
    let dead_key = cfg.dead_position_key();
    let dead: Vec<String> = tensors
        .keys()
        .filter(|k| NetfoundConfig::is_dead(k) && k.ends_with(".position_embeddings.weight"))
        .cloned()
        .collect();
    let mut dead_table = None;
    for k in dead {
        let t = tensors.remove(&k).expect("listed");
        let layer_ok = k
            .strip_prefix(&format!("{BASE}encoder.layer."))
            .and_then(|r| r.split('.').next())
            .and_then(|l| l.parse::<usize>().ok())
            .is_some_and(|l| l < cfg.layers);
        if !layer_ok {
            bail!(
                "{k}: a layer this config ({} layers) does not have",
                cfg.layers
            );
        }
        if dead_table.is_none() {
            dead_table = Some(t);
        }
        if k != dead_key {
            tolerated.push(format!("{k} (the tied, unused burst-position table)"));
        }
    }
    if let Some(t) = dead_table {
        tensors.insert(dead_key.clone(), t);
    }
    let mut missing = Vec::new();
    for s in &specs {
        match tensors.remove(&s.name) {
            Some(t) => {
                if t.dims != s.dims {
                    bail!(
                        "{}: shape {:?}, but this config ({} hidden, {} layers, {} heads, intermediate {}) needs {:?}",
                        s.name, t.dims, cfg.hidden, cfg.layers, cfg.heads, cfg.intermediate, s.dims
                    );
                }
                let Data::F32(v) = &t.data else {
                    bail!("{}: not a floating-point tensor", s.name);
                };
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    bail!("{}: value {} at index {i} is not finite", s.name, v[i]);
                }
                params.insert(s.name.clone(), t);
            }
            None if NetfoundConfig::is_dead(&s.name) => {
                // Never read by any output: zeros, noted.
                let n = s.numel();
                params.insert(
                    s.name.clone(),
                    Tensor {
                        dims: s.dims.clone(),
                        data: Data::F32(vec![0.0; n]),
                    },
                );
                tolerated.push(format!(
                    "{} absent (unused by netFound's forward; zeros)",
                    s.name
                ));
            }
            None => missing.push(s.name.clone()),
        }
    }
    if !missing.is_empty() {
        let hint = if missing.iter().any(|m| NetfoundConfig::is_rotary(m)) {
            " (the rotary tables are stored weights in netFound's checkpoints and cannot be re-derived)"
        } else {
            ""
        };
        bail!(
            "the checkpoint lacks {} key{} this config needs: {}{hint}",
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            missing
                .iter()
                .take(4)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(k) = tensors.keys().next() {
        bail!(
            "{k}: a key netFound's {} does not have (another model version or architecture?); {} unexpected key{} in all",
            if cfg.lm_heads { "netFoundLanguageModelling" } else { "netFoundFinetuningModel" },
            tensors.len(),
            if tensors.len() == 1 { "" } else { "s" }
        );
    }
    Ok((params, tolerated))
}

/// Class names of a fine-tuned model, in head order (`id2label`, else `LABEL_i`).
fn class_names(cfg: &NetfoundConfig) -> anyhow::Result<Vec<String>> {
    if cfg.num_labels == 0 {
        return Ok(Vec::new());
    }
    let map = cfg.hf_config.get("id2label").and_then(|v| v.as_object());
    (0..cfg.num_labels)
        .map(|i| match map {
            Some(m) => m
                .get(&i.to_string())
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .with_context(|| format!("config.json: id2label has no entry for class {i}")),
            None => Ok(format!("LABEL_{i}")),
        })
        .collect()
}

pub fn run(args: &ModelImportArgs) -> anyhow::Result<ImportSummary> {
    let started = Instant::now();
    let src = &args.netfound;
    if !src.is_dir() {
        bail!("--netfound {}: not a folder (a netFound checkpoint folder holds config.json and model.safetensors)", src.display());
    }
    let cfg_path = src.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .with_context(|| format!("reading {}", cfg_path.display()))?;
    let cfg =
        NetfoundConfig::from_hf_json(&text).with_context(|| format!("{}", cfg_path.display()))?;
    let classes = class_names(&cfg)?;
    let (tensors, dtypes) = read_tensors(src)?;
    let count = tensors.len();
    let mut source_dtypes = BTreeMap::new();
    for d in dtypes.values() {
        *source_dtypes.entry(d.clone()).or_insert(0) += 1;
    }
    let (params, tolerated) = map_params(&cfg, tensors)?;
    let rotary_is_sinusoid = [
        format!("{BASE}encoder.burst_positions.weight"),
        format!("{BASE}encoder.flow_positions.weight"),
    ]
    .iter()
    .all(|k| params.get(k).is_some_and(is_sinusoid));
    let model_cfg = cfg.model_config();
    let mode = if args.overwrite {
        RunMode::Overwrite
    } else {
        if std::fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_some()) {
            bail!(
                "{} already holds files; --overwrite replaces them",
                args.out.display()
            );
        }
        RunMode::New
    };
    let dir = RunDir::open(&args.out, mode, std::slice::from_ref(src))?;
    let summary = ImportSummary {
        source: src.clone(),
        out: args.out.clone(),
        kind: if cfg.lm_heads {
            "language-model"
        } else {
            "fine-tuned"
        }
        .into(),
        hidden: cfg.hidden,
        layers: cfg.layers,
        heads: cfg.heads,
        intermediate: cfg.intermediate,
        classes: classes.clone(),
        params: cfg.param_count(),
        tensors: count,
        source_dtypes,
        tolerated,
        rotary_is_sinusoid,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let ck = Checkpoint::new_model(model_cfg.clone(), DType::F32, params);
    dir.save_checkpoint(&ck)?;
    dir.write_json("netfound_config.json", &cfg.hf_config)?;
    let mut run = json!({
        "job": "import",
        "netfm_version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>(),
        "started": crate::dataset::output::rfc3339(std::time::SystemTime::now()),
        "source": crate::dataset::output::describe_input(src),
        "config": model_cfg,
        "summary": summary,
    });
    if !classes.is_empty() {
        run["classes"] = json!(classes);
    }
    dir.write_json(RUN_FILE, &run)?;
    Ok(summary)
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "import     netFound {} model: {} hidden, {} layers, {} heads, intermediate {}",
            self.kind, self.hidden, self.layers, self.heads, self.intermediate
        )?;
        if !self.classes.is_empty() {
            writeln!(f, "classes    {}", self.classes.join(", "))?;
        }
        let dtypes: Vec<String> = self
            .source_dtypes
            .iter()
            .map(|(d, n)| format!("{n} {d}"))
            .collect();
        writeln!(
            f,
            "params     {} in {} tensors ({})",
            super::thousands(self.params as u64),
            self.tensors,
            dtypes.join(", ")
        )?;
        for t in &self.tolerated {
            writeln!(f, "tolerated  {t}")?;
        }
        writeln!(
            f,
            "rotary     stored tables {} the sinusoid formula",
            if self.rotary_is_sinusoid {
                "equal"
            } else {
                "differ from"
            }
        )?;
        writeln!(
            f,
            "output     {} ({:.1} s)",
            self.out.display(),
            self.elapsed_s
        )
    }
}
