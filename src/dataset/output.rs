//! The output folder of a job that writes files (`tokenize --out`, `model export --out`):
//! what may be written where, and what a finished dataset says about itself.
//!
//! - A folder that holds anything is refused unless the user says `--overwrite` (replace
//!   it) or, for datasets, `--append` (add to a dataset written with the same settings,
//!   checked from its manifest). A run never mixes its files with another run's silently.
//! - `--overwrite` writes the new run into a hidden staging folder inside the output
//!   folder; only once the run has succeeded are the old files removed and the new ones
//!   moved into place. A failed run leaves the old contents as they were.
//! - `--shard i/N` runs of one job may share a folder: the files of the other shards of
//!   the same N (`*-s{j}of{N}*`) are theirs, neither in the way nor removed.
//! - Every output folder gets a manifest (`_manifest.json`, or `_manifest-s{i}of{N}.json`
//!   for a shard; see [`manifest_name`] for the underscore): netfm's version, the command, every setting, the inputs (path, size,
//!   modification time), each run's summary, and the parts with their row counts.
//!
//! This module never removes a file it did not classify as the run's own, and never
//! removes the folder an input lies in.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// What to do with an output folder that already holds files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutMode {
    /// Refuse a folder that holds anything (the default).
    #[default]
    New,
    /// Replace what the folder holds, once the new run has succeeded.
    Overwrite,
    /// Add to the dataset in the folder, which must have been written with the same settings.
    Append,
}

/// Version of the manifest's layout.
pub const MANIFEST_VERSION: u32 = 1;

/// One input of a run, as it was when the run read it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InputFile {
    pub path: String,
    /// Bytes on disk (absent for stdin).
    pub size: Option<u64>,
    /// Modification time, RFC 3339 UTC (absent for stdin or when unknown).
    pub modified: Option<String>,
}

/// One part file of a dataset, relative to its folder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartFile {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// One run that wrote into a dataset folder (a dataset appended to has several).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub netfm_version: String,
    /// The command line, as given.
    pub command: Vec<String>,
    pub started: String,
    /// Settings that shape the files but not the rows (part sizes, compression).
    pub writer: serde_json::Value,
    pub inputs: Vec<InputFile>,
    /// The run's summary, as `--json` prints it.
    pub summary: serde_json::Value,
    /// The parts this run wrote.
    pub parts: Vec<String>,
}

/// The manifest ([`manifest_name`]): what made an output folder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub manifest_version: u32,
    /// What the folder holds: `netfm-parquet` or `netfound-arrow`.
    pub kind: String,
    /// Every setting that shapes the rows (equal for every run of the dataset).
    pub settings: serde_json::Value,
    pub runs: Vec<RunRecord>,
    /// Every part of the dataset, in name order.
    pub parts: Vec<PartFile>,
    /// Rows in all parts.
    pub rows: u64,
}

/// The manifest's file name for a run of shard `shard_tag` (`s0of1` unsharded). It starts
/// with `_` because dataset readers skip such files when they discover a folder's parts
/// (pyarrow's `ds.dataset`, Spark, Hive): named `manifest.json`, pyarrow would try to read
/// it as a Parquet part and fail.
pub fn manifest_name(shard_tag: &str) -> String {
    if shard_tag == "s0of1" {
        "_manifest.json".to_string()
    } else {
        format!("_manifest-{shard_tag}.json")
    }
}

/// Whether a file name belongs to another shard of the same count as `shard_tag`
/// (`s{i}of{N}`): contains `s{j}of{N}` for some `j != i`.
fn other_shard(name: &str, shard_tag: &str) -> bool {
    let Some((own, count)) = shard_tag.strip_prefix('s').and_then(|t| t.split_once("of")) else {
        return false;
    };
    if count == "1" {
        return false;
    }
    let suffix = format!("of{count}");
    let mut rest = name;
    while let Some(at) = rest.find(&suffix) {
        let before = &rest[..at];
        let digits: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let after = rest[at + suffix.len()..].chars().next();
        let ends = !after.is_some_and(|c| c.is_ascii_digit());
        if !digits.is_empty()
            && ends
            && before[..before.len() - digits.len()].ends_with('s')
            && digits.chars().rev().collect::<String>() != own
        {
            return true;
        }
        rest = &rest[at + suffix.len()..];
    }
    false
}

/// The files (relative paths) below `dir` that are this run's concern: everything but the
/// other shards' files. Hidden staging folders of runs in progress are listed too.
fn own_files(dir: &Path, shard_tag: &str) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(
        root: &Path,
        rel: &Path,
        shard_tag: &str,
        out: &mut Vec<PathBuf>,
    ) -> anyhow::Result<()> {
        let here = root.join(rel);
        let entries =
            std::fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", here.display()))?;
            let name = entry.file_name();
            let rel = rel.join(&name);
            let kind = entry
                .file_type()
                .with_context(|| format!("reading {}", root.join(&rel).display()))?;
            if other_shard(&name.to_string_lossy(), shard_tag) {
                continue;
            }
            if kind.is_dir() {
                walk(root, &rel, shard_tag, out)?;
            } else {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, Path::new(""), shard_tag, &mut out)?;
    out.sort();
    Ok(out)
}

/// A prepared output folder: where the sinks write, and how the run is put in place.
#[derive(Debug)]
pub struct OutputDir {
    /// The folder the user named.
    pub dir: PathBuf,
    /// Where this run writes: `dir`, or a staging folder inside it for `--overwrite`.
    pub write_dir: PathBuf,
    mode: OutMode,
    shard_tag: String,
    /// The manifest of the dataset appended to.
    pub previous: Option<Manifest>,
    /// The old files a successful `--overwrite` run removes.
    replaced: Vec<PathBuf>,
    committed: bool,
    /// The folder did not exist before this run.
    created: bool,
}

impl OutputDir {
    /// Checks `dir` for a run of shard `shard_tag` in `mode` and prepares it. `inputs` are
    /// the run's inputs (an overwrite never removes a folder holding one); `settings` and
    /// `kind` must equal an appended dataset's.
    pub fn prepare(
        dir: &Path,
        mode: OutMode,
        shard_tag: &str,
        inputs: &[PathBuf],
        kind: &str,
        settings: &serde_json::Value,
    ) -> anyhow::Result<OutputDir> {
        if dir.exists() && !dir.is_dir() {
            bail!("--out {}: exists and is not a folder", dir.display());
        }
        let own = if dir.is_dir() {
            own_files(dir, shard_tag)?
        } else {
            Vec::new()
        };
        let mut out = OutputDir {
            dir: dir.to_path_buf(),
            write_dir: dir.to_path_buf(),
            mode,
            shard_tag: shard_tag.to_string(),
            previous: None,
            replaced: Vec::new(),
            committed: false,
            created: !dir.exists(),
        };
        if own.is_empty() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            return Ok(out);
        }
        match mode {
            OutMode::New => bail!(
                "--out {}: the folder is not empty ({} file{}, e.g. {}); pass --overwrite to replace what it holds{}",
                dir.display(),
                own.len(),
                if own.len() == 1 { "" } else { "s" },
                own[0].display(),
                if kind.is_empty() { "" } else { ", or --append to add to a dataset written with the same settings" }
            ),
            OutMode::Overwrite => {
                refuse_to_replace(dir, inputs)?;
                let staging = dir.join(format!(".netfm-staging-{shard_tag}-{}", std::process::id()));
                if staging.exists() {
                    std::fs::remove_dir_all(&staging)
                        .with_context(|| format!("clearing {}", staging.display()))?;
                }
                std::fs::create_dir_all(&staging)
                    .with_context(|| format!("creating {}", staging.display()))?;
                out.write_dir = staging;
                out.replaced = own;
            }
            OutMode::Append => {
                let path = dir.join(manifest_name(shard_tag));
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "--append: {} holds files but no {} (not a netfm dataset, or made by another shard)",
                        dir.display(),
                        manifest_name(shard_tag)
                    )
                })?;
                let manifest: Manifest = serde_json::from_str(&text)
                    .with_context(|| format!("--append: {} is not a netfm manifest", path.display()))?;
                if manifest.kind != kind {
                    bail!(
                        "--append: {} holds a {} dataset; this run writes {}",
                        dir.display(),
                        manifest.kind,
                        kind
                    );
                }
                if let Some(diff) = first_difference(&manifest.settings, settings, "") {
                    bail!(
                        "--append: {} was written with other settings ({diff}); use the same settings, or another --out",
                        dir.display()
                    );
                }
                let listed: Vec<&str> = manifest.parts.iter().map(|p| p.path.as_str()).collect();
                let manifest_file = manifest_name(shard_tag);
                for f in &own {
                    let s = f.to_string_lossy();
                    if s != manifest_file && !listed.contains(&s.as_ref()) {
                        bail!(
                            "--append: {} holds {}, which its manifest does not list; refusing to add to it",
                            dir.display(),
                            f.display()
                        );
                    }
                }
                out.previous = Some(manifest);
            }
        }
        Ok(out)
    }

    /// Where a file the run wrote under [`Self::write_dir`] is once the run is committed.
    pub fn final_path(&self, written: &Path) -> PathBuf {
        match written.strip_prefix(&self.write_dir) {
            Ok(rel) => self.dir.join(rel),
            Err(_) => written.to_path_buf(),
        }
    }

    /// Moves the run's files into place and writes the manifest. `parts` are the files the
    /// run wrote (under [`Self::write_dir`]) with their rows; `run` describes the run.
    /// Returns the parts' final paths.
    pub fn commit(
        mut self,
        parts: &[(PathBuf, u64)],
        kind: &str,
        settings: serde_json::Value,
        mut run: RunRecord,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let rel = |p: &Path| -> anyhow::Result<PathBuf> {
            p.strip_prefix(&self.write_dir)
                .map(Path::to_path_buf)
                .with_context(|| format!("{} is outside {}", p.display(), self.write_dir.display()))
        };
        let mut new_parts = Vec::with_capacity(parts.len());
        for (path, rows) in parts {
            new_parts.push((rel(path)?, *rows));
        }
        if self.mode == OutMode::Overwrite && self.write_dir != self.dir {
            for old in &self.replaced {
                let p = self.dir.join(old);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
                }
            }
            remove_empty_dirs(&self.dir, &self.write_dir);
            for (r, _) in &new_parts {
                let to = self.dir.join(r);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                let from = self.write_dir.join(r);
                std::fs::rename(&from, &to)
                    .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
            }
            let _ = std::fs::remove_dir_all(&self.write_dir);
        }
        let (mut all, mut runs) = self
            .previous
            .take()
            .map(|m| (m.parts, m.runs))
            .unwrap_or_default();
        for (r, rows) in &new_parts {
            let path = r.to_string_lossy().into_owned();
            let bytes = std::fs::metadata(self.dir.join(r))
                .map(|m| m.len())
                .unwrap_or(0);
            run.parts.push(path.clone());
            all.push(PartFile {
                path,
                rows: *rows,
                bytes,
            });
        }
        all.sort_by(|a, b| a.path.cmp(&b.path));
        run.parts.sort();
        runs.push(run);
        let manifest = Manifest {
            manifest_version: MANIFEST_VERSION,
            kind: kind.to_string(),
            settings,
            rows: all.iter().map(|p| p.rows).sum(),
            runs,
            parts: all,
        };
        write_atomic(
            &self.dir,
            &manifest_name(&self.shard_tag),
            serde_json::to_string_pretty(&manifest)?.as_bytes(),
        )?;
        self.committed = true;
        Ok(new_parts.iter().map(|(r, _)| self.dir.join(r)).collect())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        // A run that did not commit leaves the folder as it found it (its own complete
        // parts excepted in the plain and append modes, where they are written in place:
        // the sinks remove their unfinished ones).
        if !self.committed && self.write_dir != self.dir {
            let _ = std::fs::remove_dir_all(&self.write_dir);
        }
        if !self.committed && self.created {
            // Only an empty folder goes: what a failed run left has been removed above or
            // by the sinks; anything else stays.
            remove_empty_dirs(&self.dir, &self.write_dir);
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Removes the folders below `dir` that are empty (not `keep`, nor `dir` itself).
fn remove_empty_dirs(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p == keep || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        remove_empty_dirs(&p, keep);
        let _ = std::fs::remove_dir(&p); // fails unless empty
    }
}

/// Refuses to replace a folder that is a root, the home folder, the current folder or one
/// of its ancestors, or that holds one of the run's inputs.
pub fn refuse_to_replace(dir: &Path, inputs: &[PathBuf]) -> anyhow::Result<()> {
    let canon = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let cwd = std::env::current_dir().ok();
    if canon.parent().is_none()
        || home.and_then(|h| h.canonicalize().ok()).as_deref() == Some(canon.as_path())
        || cwd.is_some_and(|c| c.starts_with(&canon))
    {
        bail!(
            "--overwrite: refusing to replace {} (a root, home or working folder)",
            dir.display()
        );
    }
    for input in inputs {
        if let Ok(i) = input.canonicalize() {
            if i.starts_with(&canon) {
                bail!(
                    "--overwrite: input {} lies inside --out {}; refusing to replace it",
                    input.display(),
                    dir.display()
                );
            }
        }
    }
    Ok(())
}

/// The first setting in which `a` and `b` differ, as `path: a != b`.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                first_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &path,
                )
            })
        }
        _ if a == b => None,
        _ => Some(format!("{at}: {a} there, {b} now")),
    }
}

/// Writes `bytes` to `dir/name` through a hidden temporary name, so a reader never sees a
/// partial file under the final name.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("renaming {}", tmp.display()))
}

/// A time as RFC 3339 UTC with microseconds (`2026-12-02T18:11:37.123456Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// What an input is now: a file's path, size and modification time; `-` for stdin.
pub fn describe(input: &crate::capture::Input) -> InputFile {
    match input {
        crate::capture::Input::File(p) => describe_input(p),
        crate::capture::Input::Stdin => InputFile {
            path: "-".to_string(),
            size: None,
            modified: None,
        },
    }
}

/// What an input file is now (path, size, modification time).
pub fn describe_input(path: &Path) -> InputFile {
    let meta = std::fs::metadata(path).ok();
    InputFile {
        path: path.display().to_string(),
        size: meta.as_ref().map(|m| m.len()),
        modified: meta.and_then(|m| m.modified().ok()).map(rfc3339),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_shards_are_recognised() {
        assert!(other_shard("part-s1of4-00000.parquet", "s0of4"));
        assert!(other_shard("_manifest-s3of4.json", "s0of4"));
        assert!(!other_shard("part-s0of4-00000.parquet", "s0of4"));
        assert!(!other_shard("part-s1of40-00000.parquet", "s0of4"));
        assert!(!other_shard("part-s1of4-00000.parquet", "s0of1"));
        assert!(!other_shard("notes.txt", "s0of4"));
        assert!(!other_shard("xs11of4", "s11of4"));
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_795_000_000_123_456);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn settings_differences_are_named() {
        let a = serde_json::json!({"bursts": {"max_bursts": 12}, "format": "parquet"});
        let b = serde_json::json!({"bursts": {"max_bursts": 8}, "format": "parquet"});
        assert_eq!(
            first_difference(&a, &b, "").as_deref(),
            Some("bursts.max_bursts: 12 there, 8 now")
        );
        assert_eq!(first_difference(&a, &a, ""), None);
    }

    #[test]
    fn a_full_folder_is_refused_and_an_overwrite_replaces_only_on_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        std::fs::create_dir_all(dir.join("proto=tcp")).unwrap();
        std::fs::write(dir.join("proto=tcp/part-s0of1-00000.parquet"), b"old").unwrap();
        let settings = serde_json::json!({"a": 1});
        let err = OutputDir::prepare(&dir, OutMode::New, "s0of1", &[], "netfm-parquet", &settings)
            .unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        // An overwrite that does not commit leaves the old files.
        let o = OutputDir::prepare(
            &dir,
            OutMode::Overwrite,
            "s0of1",
            &[],
            "netfm-parquet",
            &settings,
        )
        .unwrap();
        assert!(o.write_dir.starts_with(&dir) && o.write_dir != dir);
        drop(o);
        assert!(dir.join("proto=tcp/part-s0of1-00000.parquet").is_file());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "staging removed"
        );
        // One that commits replaces them.
        let o = OutputDir::prepare(
            &dir,
            OutMode::Overwrite,
            "s0of1",
            &[],
            "netfm-parquet",
            &settings,
        )
        .unwrap();
        std::fs::create_dir_all(o.write_dir.join("proto=udp")).unwrap();
        let part = o.write_dir.join("proto=udp/part-s0of1-00000.parquet");
        std::fs::write(&part, b"new").unwrap();
        let run = RunRecord {
            netfm_version: "t".into(),
            command: vec![],
            started: String::new(),
            writer: serde_json::Value::Null,
            inputs: vec![],
            summary: serde_json::Value::Null,
            parts: vec![],
        };
        let done = o
            .commit(&[(part, 7)], "netfm-parquet", settings.clone(), run)
            .unwrap();
        assert_eq!(done, vec![dir.join("proto=udp/part-s0of1-00000.parquet")]);
        assert!(!dir.join("proto=tcp").exists());
        let m: Manifest =
            serde_json::from_str(&std::fs::read_to_string(dir.join("_manifest.json")).unwrap())
                .unwrap();
        assert_eq!(m.rows, 7);
        assert_eq!(m.parts[0].path, "proto=udp/part-s0of1-00000.parquet");
        assert_eq!(m.parts[0].bytes, 3);
        // Appending needs the same settings.
        let err = OutputDir::prepare(
            &dir,
            OutMode::Append,
            "s0of1",
            &[],
            "netfm-parquet",
            &serde_json::json!({"a": 2}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("a: 1 there, 2 now"), "{err}");
        assert!(OutputDir::prepare(
            &dir,
            OutMode::Append,
            "s0of1",
            &[],
            "netfm-parquet",
            &settings
        )
        .unwrap()
        .previous
        .is_some());
        // An input inside the folder is never replaced.
        let err = OutputDir::prepare(
            &dir,
            OutMode::Overwrite,
            "s0of1",
            &[dir.join("proto=udp/part-s0of1-00000.parquet")],
            "netfm-parquet",
            &settings,
        )
        .unwrap_err();
        assert!(err.to_string().contains("lies inside"), "{err}");
    }
}
