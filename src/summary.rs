//! The end-of-run summary of a tokenize run: what was read, decoded, skipped (by reason),
//! grouped and written, and how fast. Printed for humans, or as JSON for scripts.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// A capture file that was damaged or could not be read.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FileWarning {
    pub file: String,
    /// Byte offset in the (decompressed) capture where reading stopped, if known.
    pub byte_offset: Option<u64>,
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    pub files: u64,
    /// Files that could not be opened or were not captures at all.
    pub files_failed: u64,
    /// Files below a directory argument that are not captures (by magic), left out.
    pub files_ignored: Vec<FileWarning>,
    /// Files named more than once (or also found inside a directory argument): read once.
    pub files_duplicate: Vec<FileWarning>,
    /// Files that ended early because of damage (everything before it was used).
    pub files_damaged: u64,
    pub bytes_read: u64,
    pub packets_read: u64,
    pub packets_decoded: u64,
    /// Packets that were read but could not be decoded, by reason: `packets_read` is
    /// `packets_decoded` plus these.
    pub packets_skipped: BTreeMap<String, u64>,
    /// Decoded packets that netFound's rules leave out of its flows (netFound mode), by
    /// reason.
    pub packets_dropped: BTreeMap<String, u64>,
    /// Packets whose timestamp is earlier than the packet before them in their file.
    /// Flows take such packets in timestamp order: a flow starts at its earliest packet
    /// and ends at its latest, so durations and gaps are never negative.
    pub packets_out_of_order: u64,
    /// The files that held out-of-order packets: how many, and the largest step back.
    pub out_of_order_files: Vec<OutOfOrderFile>,
    /// Frames of link types netfm does not decode, by file and link type number.
    pub unsupported_link_types: BTreeMap<String, BTreeMap<u32, u64>>,
    pub flows: u64,
    pub flows_evicted: u64,
    /// Flows netFound's rules drop (netFound mode), by reason.
    pub flows_dropped: BTreeMap<String, u64>,
    pub bursts: u64,
    pub tokens: u64,
    /// Packets that arrived so late (timestamp order) that netFound's burst layout could
    /// not be reproduced exactly for their flow; 0 for time-ordered captures.
    pub late_packets_inexact: u64,
    pub seconds: f64,
    pub packets_per_second: f64,
    pub output_files: Vec<String>,
    pub warnings: Vec<FileWarning>,
    /// The signal that stopped the run early (its open flows were ended and written).
    pub interrupted_by: Option<String>,
}

/// A file whose packets were not in timestamp order.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OutOfOrderFile {
    pub file: String,
    pub packets: u64,
    /// The largest step back in time from one packet to the next, in microseconds.
    pub max_step_back_us: u64,
}

impl RunSummary {
    pub fn skip(&mut self, reason: &str, n: u64) {
        if n > 0 {
            *self.packets_skipped.entry(reason.to_string()).or_default() += n;
        }
    }

    pub fn packets_skipped_total(&self) -> u64 {
        self.packets_skipped.values().sum()
    }

    pub fn packets_dropped_total(&self) -> u64 {
        self.packets_dropped.values().sum()
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "files      {} read, {} failed, {} damaged ({:.1} MB)",
            self.files,
            self.files_failed,
            self.files_damaged,
            self.bytes_read as f64 / 1e6
        )?;
        writeln!(
            f,
            "packets    {} read, {} decoded, {} skipped",
            self.packets_read,
            self.packets_decoded,
            self.packets_skipped_total()
        )?;
        for (reason, n) in &self.packets_skipped {
            writeln!(f, "             skipped {reason}: {n}")?;
        }
        if !self.packets_dropped.is_empty() {
            writeln!(
                f,
                "           {} decoded packets left out by netFound's rules",
                self.packets_dropped_total()
            )?;
            for (reason, n) in &self.packets_dropped {
                writeln!(f, "             dropped {reason}: {n}")?;
            }
        }
        if self.packets_out_of_order > 0 {
            writeln!(
                f,
                "           {} packets out of timestamp order (taken in timestamp order)",
                self.packets_out_of_order
            )?;
            for o in &self.out_of_order_files {
                writeln!(
                    f,
                    "             {}: {} packets, up to {:.6} s back",
                    o.file,
                    o.packets,
                    o.max_step_back_us as f64 / 1e6
                )?;
            }
        }
        for (file, types) in &self.unsupported_link_types {
            for (lt, n) in types {
                writeln!(
                    f,
                    "             {file}: {n} frames of unsupported link type {lt}"
                )?;
            }
        }
        writeln!(
            f,
            "flows      {} written, {} evicted early",
            self.flows, self.flows_evicted
        )?;
        for (reason, n) in &self.flows_dropped {
            writeln!(f, "             dropped {reason}: {n}")?;
        }
        writeln!(f, "bursts     {}", self.bursts)?;
        writeln!(f, "tokens     {}", self.tokens)?;
        if self.late_packets_inexact > 0 {
            writeln!(
                f,
                "late       {} packets arrived too far out of time order to place exactly",
                self.late_packets_inexact
            )?;
        }
        writeln!(
            f,
            "time       {:.3} s, {:.0} packets/s",
            self.seconds, self.packets_per_second
        )?;
        for w in &self.warnings {
            match w.byte_offset {
                Some(off) => writeln!(f, "warning    {}: at byte {}: {}", w.file, off, w.message)?,
                None => writeln!(f, "warning    {}: {}", w.file, w.message)?,
            }
        }
        for w in &self.files_ignored {
            writeln!(f, "ignored    {}: {}", w.file, w.message)?;
        }
        for w in &self.files_duplicate {
            writeln!(f, "warning    {}: {}", w.file, w.message)?;
        }
        if let Some(signal) = &self.interrupted_by {
            writeln!(
                f,
                "stopped    by {signal}: open flows were ended (end_reason interrupted) and written"
            )?;
        }
        for o in &self.output_files {
            writeln!(f, "output     {o}")?;
        }
        Ok(())
    }
}
