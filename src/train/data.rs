//! Training data: which flows a run reads, how they are split, and the stream of batches.
//!
//! - [`Catalog`]: the dataset files of every `--data` directory, with their rows per capture
//!   file (only the `source` column is read), so a run knows its size up front and can split
//!   by capture file without a pass over the tokens.
//! - [`Split`]: the held-out capture files. A flow's *unit* is its `source` column (the
//!   capture file), or its dataset file where the schema has no `source` (netFound's). The
//!   units are ordered by a hash of the seed and their file name, and taken in that order until
//!   the held-out share is reached, so the split is deterministic and no capture file is in
//!   both halves.
//! - [`EpochStream`]: one epoch's batches. The dataset files are read in an order shuffled per
//!   epoch, through a shuffle buffer (`shuffle_buffer` flows); flows leave it at random into
//!   a pool of `pool_batches` batches, which is sorted by shape (bursts, then tokens) and cut
//!   into batches, whose order is shuffled again. Batches of flows of like length waste little
//!   even in the dense layout, and the packed layout wastes almost nothing. Memory is the
//!   buffer plus the pool, whatever the dataset's size. Everything is drawn from the seed and
//!   the epoch, so a run repeats exactly and a resumed run finds its place by counting.
//! - [`Producer`]: a thread that reads, batches, corrupts and lays out batches ahead of the
//!   train step, through a bounded channel.

use super::collate::{classify_batch, pretrain_batch, Batch, Layout, Masking};
use crate::dataset::reader::{files_of, row_sources, DatasetReader, FlowExample};
use anyhow::{bail, Context};
use netfm_models::hier::IGNORE_INDEX;
use netfm_models::params::SplitMix64;
use netfm_tokenizer::TokenizedFlow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One dataset file and its rows per unit.
#[derive(Clone, Debug)]
pub struct DataFile {
    pub path: PathBuf,
    pub bytes: u64,
    /// (unit, rows) in first-seen order.
    pub units: Vec<(String, u64)>,
}

impl DataFile {
    pub fn rows(&self) -> u64 {
        self.units.iter().map(|u| u.1).sum()
    }
}

/// The dataset files of a run.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub files: Vec<DataFile>,
}

/// A flow's unit: the capture file it came from, else its dataset file.
pub fn unit_of(source: Option<&str>, file: &Path) -> String {
    match source {
        Some(s) => s.to_string(),
        None => file.display().to_string(),
    }
}

impl Catalog {
    /// Every dataset file under `dirs` (each a directory or a file), each checked and its
    /// units counted. A directory without dataset files is an error naming it.
    pub fn open(dirs: &[PathBuf]) -> anyhow::Result<Catalog> {
        let mut files = Vec::new();
        let mut seen = HashSet::new();
        for dir in dirs {
            // Opening checks every file's footer and schema now, not hours into a run.
            DatasetReader::open(dir)?;
            for path in files_of(dir)? {
                let canon = path.canonicalize().unwrap_or_else(|_| path.clone());
                if !seen.insert(canon) {
                    continue; // the same file named twice
                }
                let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let units = row_sources(&path)?
                    .into_iter()
                    .map(|(source, n)| (unit_of(source.as_deref(), &path), n))
                    .collect();
                files.push(DataFile { path, bytes, units });
            }
        }
        Ok(Catalog { files })
    }

    pub fn rows(&self) -> u64 {
        self.files.iter().map(DataFile::rows).sum()
    }

    /// Rows per unit, over all files.
    pub fn unit_rows(&self) -> HashMap<String, u64> {
        let mut m = HashMap::new();
        for f in &self.files {
            for (u, n) in &f.units {
                *m.entry(u.clone()).or_insert(0) += n;
            }
        }
        m
    }

    /// The file paths, in catalog order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

/// FNV-1a, for seeding per name.
pub fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A seed for one purpose and index.
pub fn derive_seed(seed: u64, purpose: &str, index: u64) -> u64 {
    let mut r = SplitMix64(seed ^ name_hash(purpose) ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    r.next_u64()
}

/// The held-out units.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    pub held_out: HashSet<String>,
}

impl Split {
    /// Holds out about `fraction` of the rows, by unit (see the module docs). At least one
    /// unit is held out and at least one kept; with fewer than two units that is an error.
    pub fn by_unit(
        unit_rows: &HashMap<String, u64>,
        fraction: f64,
        seed: u64,
    ) -> anyhow::Result<Split> {
        if !(0.0..1.0).contains(&fraction) {
            bail!("the held-out fraction must be in [0, 1), not {fraction}");
        }
        if fraction == 0.0 {
            return Ok(Split::default());
        }
        if unit_rows.len() < 2 {
            bail!(
                "the data comes from {} capture file(s), too few to hold some out by file; give --val-data, or --val-fraction 0",
                unit_rows.len()
            );
        }
        let mut units: Vec<(&String, u64)> = unit_rows.iter().map(|(u, &n)| (u, n)).collect();
        // By file name, so the split does not depend on the folder the data was read from.
        units.sort_by_key(|(u, _)| {
            (
                derive_seed(seed, "split", name_hash(file_name(u))),
                (*u).clone(),
            )
        });
        let total: u64 = units.iter().map(|u| u.1).sum();
        let want = (fraction * total as f64).ceil() as u64;
        let mut held_out = HashSet::new();
        let mut rows = 0;
        for (u, n) in &units[..units.len() - 1] {
            if rows >= want.max(1) {
                break;
            }
            held_out.insert((*u).clone());
            rows += n;
        }
        Ok(Split { held_out })
    }

    /// Holds out exactly the named capture files (matched by file name, as in a split list).
    pub fn by_names(unit_rows: &HashMap<String, u64>, names: &HashSet<String>) -> Split {
        let held_out = unit_rows
            .keys()
            .filter(|u| names.contains(file_name(u)))
            .cloned()
            .collect();
        Split { held_out }
    }

    pub fn contains(&self, unit: &str) -> bool {
        self.held_out.contains(unit)
    }
}

/// The last path component of a unit (a capture file's name).
pub fn file_name(unit: &str) -> &str {
    unit.rsplit('/').next().unwrap_or(unit)
}

/// Which flows a stream takes.
#[derive(Clone, Debug)]
pub enum Take {
    All,
    /// Only flows of these units.
    Held(Arc<Split>),
    /// Only flows of other units.
    Rest(Arc<Split>),
}

impl Take {
    pub fn wants(&self, unit: &str) -> bool {
        match self {
            Take::All => true,
            Take::Held(s) => s.contains(unit),
            Take::Rest(s) => !s.contains(unit),
        }
    }
}

/// How batches are drawn.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamConfig {
    pub batch_size: usize,
    pub shuffle_buffer: usize,
    /// Batches per length-sorted pool; 1 = no length bucketing (random batches).
    pub pool_batches: usize,
    pub seed: u64,
}

/// Which flows a job wants beyond the split (e.g. only labelled ones), given the flow and
/// its dataset file.
pub type Keep = Arc<dyn Fn(&FlowExample, &Path) -> bool + Send + Sync>;

/// Flows read from a list of dataset files in order, filtered.
struct FlowSource {
    /// (index in the stream's file list, path), in reading order.
    files: Vec<(usize, PathBuf)>,
    next: usize,
    reader: Option<(DatasetReader, usize, PathBuf)>,
    take: Take,
    keep: Option<Keep>,
    /// Flows without bursts (nothing for a model to read), skipped.
    empty: u64,
}

impl FlowSource {
    fn next_flow(&mut self) -> Option<anyhow::Result<FlowExample>> {
        loop {
            if let Some((reader, index, path)) = self.reader.as_mut() {
                match reader.next() {
                    Some(Ok(mut ex)) => {
                        ex.file = *index;
                        let unit = unit_of(ex.id.source.as_deref(), path);
                        if !self.take.wants(&unit)
                            || self.keep.as_ref().is_some_and(|k| !k(&ex, path))
                        {
                            continue;
                        }
                        if ex.flow.bursts.is_empty() {
                            self.empty += 1;
                            continue;
                        }
                        return Some(Ok(ex));
                    }
                    Some(Err(e)) => {
                        return Some(Err(e.context(format!(
                            "{} is damaged (remove it or tokenize it again)",
                            path.display()
                        ))))
                    }
                    None => self.reader = None,
                }
            }
            let (index, path) = self.files.get(self.next)?.clone();
            self.next += 1;
            match DatasetReader::open(&path) {
                Ok(r) => self.reader = Some((r, index, path)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The flows of one epoch, in batches (see the module docs). Each flow's `file` is the index
/// of its dataset file in the list the stream was made from.
pub struct EpochStream {
    source: FlowSource,
    cfg: StreamConfig,
    rng: SplitMix64,
    buffer: Vec<FlowExample>,
    ready: std::collections::VecDeque<Vec<FlowExample>>,
    drained: bool,
}

impl EpochStream {
    pub fn new(files: &[PathBuf], take: Take, cfg: &StreamConfig, epoch: u64) -> EpochStream {
        EpochStream::filtered(files, take, None, cfg, epoch)
    }

    /// A stream of only the flows `keep` accepts.
    pub fn filtered(
        files: &[PathBuf],
        take: Take,
        keep: Option<Keep>,
        cfg: &StreamConfig,
        epoch: u64,
    ) -> EpochStream {
        let mut rng = SplitMix64(derive_seed(cfg.seed, "epoch", epoch));
        let mut files: Vec<(usize, PathBuf)> = files.iter().cloned().enumerate().collect();
        if cfg.shuffle_buffer > 1 {
            shuffle(&mut files, &mut rng);
        }
        EpochStream {
            source: FlowSource {
                files,
                next: 0,
                reader: None,
                take,
                keep,
                empty: 0,
            },
            cfg: cfg.clone(),
            rng,
            buffer: Vec::new(),
            ready: Default::default(),
            drained: false,
        }
    }

    /// Flows skipped for having no bursts so far.
    pub fn empty_flows(&self) -> u64 {
        self.source.empty
    }

    /// The next flow out of the shuffle buffer.
    fn next_shuffled(&mut self) -> Option<anyhow::Result<FlowExample>> {
        while !self.drained && self.buffer.len() < self.cfg.shuffle_buffer.max(1) {
            match self.source.next_flow() {
                Some(Ok(ex)) => self.buffer.push(ex),
                Some(Err(e)) => return Some(Err(e)),
                None => self.drained = true,
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        let i = (self.rng.next_u64() % self.buffer.len() as u64) as usize;
        Some(Ok(self.buffer.swap_remove(i)))
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// The shape a flow is sorted by in a pool: bursts, then tokens.
fn shape_key(f: &TokenizedFlow) -> (usize, usize) {
    (f.bursts.len(), f.tokens.len())
}

impl Iterator for EpochStream {
    type Item = anyhow::Result<Vec<FlowExample>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(b) = self.ready.pop_front() {
            return Some(Ok(b));
        }
        let bs = self.cfg.batch_size.max(1);
        let mut pool = Vec::with_capacity(bs * self.cfg.pool_batches.max(1));
        while pool.len() < pool.capacity() {
            match self.next_shuffled() {
                Some(Ok(ex)) => pool.push(ex),
                Some(Err(e)) => return Some(Err(e)),
                None => break,
            }
        }
        if pool.is_empty() {
            return None;
        }
        if self.cfg.pool_batches > 1 {
            pool.sort_by_key(|ex| shape_key(&ex.flow));
        }
        let mut batches = Vec::new();
        while !pool.is_empty() {
            let rest = pool.split_off(bs.min(pool.len()));
            batches.push(std::mem::replace(&mut pool, rest));
        }
        shuffle(&mut batches, &mut self.rng);
        self.ready.extend(batches);
        self.ready.pop_front().map(Ok)
    }
}

/// A batch ready for the train step.
pub struct Prepared {
    /// The step it is for (from 1).
    pub step: u64,
    pub epoch: u64,
    pub batch: Batch,
}

/// Batches built ahead of the train step on their own thread.
pub struct Producer {
    rx: Receiver<anyhow::Result<Prepared>>,
    handle: Option<JoinHandle<()>>,
}

/// A flow's class index (for the classification objective), given its dataset file.
pub type Labeler = Arc<dyn Fn(&FlowExample, &Path) -> Option<i64> + Send + Sync>;

/// The batches a producer builds.
pub enum BatchKind {
    /// Pretraining corruptions and targets.
    Pretrain(Masking),
    /// Class labels and per-class loss weights; flows without a label are left out.
    Classify {
        labeler: Labeler,
        class_weight: Vec<f64>,
    },
}

/// What the producer needs.
pub struct ProducerConfig {
    pub files: Vec<PathBuf>,
    pub take: Take,
    pub stream: StreamConfig,
    pub layout: Layout,
    pub kind: BatchKind,
    /// Steps already done (their batches are drawn and dropped, not built).
    pub start_step: u64,
    pub total_steps: u64,
    /// Batches built ahead.
    pub ahead: usize,
}

/// The corruption generator of a step's batch.
pub fn step_rng(seed: u64, step: u64) -> SplitMix64 {
    SplitMix64(derive_seed(seed, "corrupt", step))
}

impl Producer {
    pub fn spawn(cfg: ProducerConfig) -> anyhow::Result<Producer> {
        let (tx, rx) = sync_channel(cfg.ahead.max(1));
        let handle = std::thread::Builder::new()
            .name("netfm-batches".into())
            .spawn(move || {
                let mut step = 0u64;
                let mut epoch = 0u64;
                let mut epoch_had_batches = false;
                loop {
                    let mut stream =
                        EpochStream::new(&cfg.files, cfg.take.clone(), &cfg.stream, epoch);
                    for flows in stream.by_ref() {
                        let flows = match flows {
                            Ok(f) => f,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        };
                        epoch_had_batches = true;
                        step += 1;
                        if step > cfg.total_steps {
                            return;
                        }
                        if step <= cfg.start_step {
                            continue;
                        }
                        let refs: Vec<&TokenizedFlow> = flows.iter().map(|f| &f.flow).collect();
                        let batch = match &cfg.kind {
                            BatchKind::Pretrain(masking) => {
                                let mut rng = step_rng(cfg.stream.seed, step);
                                pretrain_batch(&refs, &cfg.layout, masking, &mut rng)
                            }
                            BatchKind::Classify {
                                labeler,
                                class_weight,
                            } => {
                                let labels: Vec<i64> = flows
                                    .iter()
                                    .map(|f| labeler(f, &cfg.files[f.file]).unwrap_or(IGNORE_INDEX))
                                    .collect();
                                classify_batch(&refs, &labels, class_weight, &cfg.layout)
                            }
                        };
                        if tx.send(Ok(Prepared { step, epoch, batch })).is_err() {
                            return; // the trainer stopped
                        }
                    }
                    if !epoch_had_batches {
                        let _ = tx.send(Err(anyhow::anyhow!(
                            "the training data holds no flows with bursts{}",
                            if stream.empty_flows() > 0 {
                                format!(" ({} flows without bursts skipped)", stream.empty_flows())
                            } else {
                                String::new()
                            }
                        )));
                        return;
                    }
                    epoch += 1;
                }
            })
            .context("starting the batch thread")?;
        Ok(Producer {
            rx,
            handle: Some(handle),
        })
    }

    /// The next batch; `None` when the run's steps are done.
    pub fn next_batch(&mut self) -> Option<anyhow::Result<Prepared>> {
        self.rx.recv().ok()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Unblock a pending send, then wait for the thread.
        let (_, rx) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_disjoint_and_keeps_both_halves() {
        let units: HashMap<String, u64> =
            (0..20).map(|i| (format!("cap{i}.pcap"), 10 + i)).collect();
        let a = Split::by_unit(&units, 0.2, 7).unwrap();
        assert_eq!(a, Split::by_unit(&units, 0.2, 7).unwrap());
        assert_ne!(
            a,
            Split::by_unit(&units, 0.2, 8).unwrap(),
            "another seed, another split"
        );
        let held: u64 = a.held_out.iter().map(|u| units[u]).sum();
        let total: u64 = units.values().sum();
        assert!(
            held as f64 >= 0.2 * total as f64 && held < total / 2,
            "{held} of {total}"
        );
        let two: HashMap<String, u64> = [("a".into(), 1000), ("b".into(), 1)].into();
        let s = Split::by_unit(&two, 0.1, 1).unwrap();
        assert_eq!(s.held_out.len(), 1, "one held out, one kept");
        let one: HashMap<String, u64> = [("a".into(), 5)].into();
        assert!(Split::by_unit(&one, 0.1, 1).is_err());
        assert!(Split::by_unit(&one, 0.0, 1).unwrap().held_out.is_empty());
        let names: HashSet<String> = ["cap3.pcap".to_string()].into();
        let dirs: HashMap<String, u64> =
            [("x/cap3.pcap".into(), 1), ("x/cap4.pcap".into(), 1)].into();
        assert_eq!(
            Split::by_names(&dirs, &names).held_out,
            ["x/cap3.pcap".to_string()].into()
        );
    }
}
