//! A training run's folder:
//!
//! - `run.json`: what made the run (job, netfm version, command, every setting, the data's
//!   files with sizes and rows, the held-out split), written when it starts; at the end (or
//!   at an interruption) its `summary` is filled in;
//! - `metrics.jsonl`: one JSON object per line, `{"event": "train", "step", ...losses,
//!   "grad_norm", "lr", "real_tokens", "slots", "tokens_per_s", "elapsed_s"}` per step and
//!   `{"event": "val", "step", "model": {...}, "baseline": {...}}` per evaluation;
//! - `checkpoint.safetensors`: parameters, AdamW moments and step (netfm-models'
//!   checkpoint format), replaced atomically every `--checkpoint-every` steps and at the end.
//!
//! A folder that holds anything is refused unless the run resumes it (`--resume`) or
//! replaces it (`--overwrite`, with the same guards as `tokenize --overwrite`). On resume,
//! metrics logged after the checkpoint's step are dropped, so the resumed run's log reads as
//! one uninterrupted run.

use crate::dataset::output::{refuse_to_replace, write_atomic};
use anyhow::{bail, Context};
use netfm_models::checkpoint::Checkpoint;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

pub const RUN_FILE: &str = "run.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// How a run treats its folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// The folder must be absent or empty.
    New,
    /// Whatever the folder holds is removed first.
    Overwrite,
    /// The folder holds a run to continue.
    Resume,
}

/// An open run folder.
pub struct RunDir {
    pub path: PathBuf,
}

/// The first entry of `dir`, if it has any.
fn first_entry(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().transpose()?.map(|e| e.path())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

impl RunDir {
    /// Opens `path` for a run; `inputs` are the run's data (never inside a folder that is
    /// replaced).
    pub fn open(path: &Path, mode: RunMode, inputs: &[PathBuf]) -> anyhow::Result<RunDir> {
        if path.exists() && !path.is_dir() {
            bail!("{} exists and is not a folder", path.display());
        }
        match mode {
            RunMode::New => {
                if let Some(f) = first_entry(path)? {
                    bail!(
                        "{} already holds {} (another run?); --resume continues that run, --overwrite replaces it",
                        path.display(),
                        f.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                    );
                }
            }
            RunMode::Overwrite => {
                if path.exists() {
                    refuse_to_replace(path, inputs)?;
                    for entry in std::fs::read_dir(path)? {
                        let p = entry?.path();
                        let r = if p.is_dir() && !p.is_symlink() {
                            std::fs::remove_dir_all(&p)
                        } else {
                            std::fs::remove_file(&p)
                        };
                        r.with_context(|| format!("--overwrite: removing {}", p.display()))?;
                    }
                }
            }
            RunMode::Resume => {
                for f in [RUN_FILE, CHECKPOINT_FILE] {
                    if !path.join(f).is_file() {
                        bail!(
                            "--resume {}: no {f} there; it is not a run folder, or the run stopped before its first checkpoint",
                            path.display()
                        );
                    }
                }
            }
        }
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir {
            path: path.to_path_buf(),
        })
    }

    pub fn write_json(&self, name: &str, value: &serde_json::Value) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value)?;
        bytes.push(b'\n');
        write_atomic(&self.path, name, &bytes)
    }

    pub fn read_json(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        read_json(&self.path.join(name))
    }

    pub fn save_checkpoint(&self, ck: &Checkpoint) -> anyhow::Result<()> {
        write_atomic(&self.path, CHECKPOINT_FILE, &ck.to_bytes())
    }

    pub fn load_checkpoint(&self) -> anyhow::Result<Checkpoint> {
        load_checkpoint(&self.path.join(CHECKPOINT_FILE))
    }

    /// The metrics log, for appending; with `keep_through = Some(step)` the lines of later
    /// steps are dropped first (a resumed run).
    pub fn metrics(&self, keep_through: Option<u64>) -> anyhow::Result<MetricsLog> {
        let path = self.path.join(METRICS_FILE);
        if let Some(step) = keep_through {
            let mut kept = Vec::new();
            if let Ok(f) = File::open(&path) {
                for line in BufReader::new(f).lines() {
                    let line = line?;
                    let at = serde_json::from_str::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| v["step"].as_u64());
                    if at.is_some_and(|s| s <= step) {
                        kept.push(line);
                    }
                }
            }
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            write_atomic(&self.path, METRICS_FILE, text.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(MetricsLog { file, path })
    }
}

pub fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// Reads a checkpoint file; a damaged or truncated one is an error saying so.
pub fn load_checkpoint(path: &Path) -> anyhow::Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Checkpoint::from_bytes(&bytes).with_context(|| {
        format!(
            "{} is not a readable netfm checkpoint (damaged or truncated?)",
            path.display()
        )
    })
}

/// Appends JSON lines, each written whole and flushed.
pub struct MetricsLog {
    file: File,
    path: PathBuf,
}

impl MetricsLog {
    pub fn write(&mut self, value: &serde_json::Value) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(value)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Reads a metrics log back (for plots and tests); lines that do not parse are skipped.
pub fn read_metrics(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        if let Ok(v) = serde_json::from_str(&line?) {
            out.push(v);
        }
    }
    Ok(out)
}
