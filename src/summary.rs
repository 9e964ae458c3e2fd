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
    /// Files that ended early because of damage (everything before it was used).
    pub files_damaged: u64,
    pub bytes_read: u64,
    pub packets_read: u64,
    pub packets_decoded: u64,
    /// Packets that were read but produced no tokens, by reason.
    pub packets_skipped: BTreeMap<String, u64>,
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
        for o in &self.output_files {
            writeln!(f, "output     {o}")?;
        }
        Ok(())
    }
}
