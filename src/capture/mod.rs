//! Capture sources: turn capture files, directories and stdin into a stream of raw frames.
//!
//! Reads classic pcap (both byte orders, micro- and nanosecond magic, the Kuznetzov
//! "modified" variant), pcapng (several sections of either byte order, several interfaces
//! with their own link type, `if_tsresol` and `if_tsoffset`), and either of them gzip
//! compressed with gzip, zstd or xz (detected by magic, not by name). Frames are read through pcap-parser's
//! streaming readers with a bounded buffer, so memory does not grow with the file; plain
//! classic pcap files are instead mapped and parsed in place by pcap-parser's frame parsers
//! (see `mapped.rs`), with the mapping kept to a bounded window.
//!
//! Damage after a successful open (a truncated record, a corrupt block, a read error) ends
//! that file: every frame before the damage is delivered, then a [`CaptureWarning`] names
//! the file and the byte offset. Only failing to open a capture is an error.
//!
//! This module never looks inside a frame (that is [`crate::decode`]'s job), never
//! allocates per frame, and never panics on input bytes.

mod input;
mod mapped;
mod reader;

pub use input::{expand_inputs, ExpandedInputs, Input};
pub use reader::{CaptureFormat, CaptureReader, CaptureStats, Frame, INITIAL_BUFFER, MAX_BUFFER};

use std::fmt;
use std::path::PathBuf;

/// Failure to open or list a capture input. Carries the input it is about.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The input could not be opened, read or listed. (The message holds the cause; it is
    /// not chained again as a source, which would print it twice.)
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The input holds no bytes at all.
    #[error("{path}: empty file, not a capture")]
    Empty { path: PathBuf },
    /// The first bytes are no pcap or pcapng magic (plain or compressed); `what` says what
    /// the file seems to be instead.
    #[error("{path}: {what}")]
    NotACapture { path: PathBuf, what: String },
    /// The magic is right but the file header could not be parsed.
    #[error("{path}: bad capture header: {message}")]
    BadHeader { path: PathBuf, message: String },
}

/// Damage found while reading an input that opened fine. The input ended at `byte_offset`
/// (an offset in the decompressed stream for gzip inputs); everything before was delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureWarning {
    pub path: PathBuf,
    pub byte_offset: u64,
    pub message: String,
}

impl fmt::Display for CaptureWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: at byte {}: {}",
            self.path.display(),
            self.byte_offset,
            self.message
        )
    }
}
