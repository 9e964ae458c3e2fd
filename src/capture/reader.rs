//! The frame reader: pcap-parser's streaming readers behind one lending-iterator API, with
//! pcapng interface bookkeeping (link type, timestamp resolution and offset per interface)
//! and damage turned into a [`CaptureWarning`].

use super::input::{classify, io_err, sniff_stream, Magic};
use super::mapped::MappedPcap;
use super::{CaptureError, CaptureWarning, Input};
use pcap_parser::pcapng::{Block, OptionCode, PcapNGOption};
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Initial size of the streaming buffer.
pub const INITIAL_BUFFER: usize = 1 << 20;
/// The buffer grows (for a single oversized block) up to this size; a block that claims
/// more ends the file with a warning.
pub const MAX_BUFFER: usize = 64 << 20;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// One captured frame, borrowed from the reader's buffer until the next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// LINKTYPE_* of the frame's interface.
    pub linktype: u32,
    /// The captured bytes (caplen of them).
    pub data: &'a [u8],
    /// Length of the frame on the wire.
    pub orig_len: u32,
    /// Offset of the frame's record/block in the (decompressed) stream.
    pub byte_offset: u64,
}

/// Container format of an opened capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic libpcap.
    Pcap {
        big_endian: bool,
        nanosecond: bool,
        modified: bool,
    },
    /// pcapng (byte order can change per section).
    PcapNg,
}

/// Counters of one reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames delivered.
    pub frames: u64,
    /// pcapng packet blocks naming an interface that was never described (skipped).
    pub unknown_interface_frames: u64,
    /// pcapng blocks that are not packets (statistics, name resolution, ...), skipped.
    pub other_blocks: u64,
}

/// A pcapng interface as its description block declared it.
#[derive(Clone, Copy, Debug)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    /// Timestamp units per second.
    units_per_sec: u64,
    /// `if_tsoffset`: seconds added to every timestamp.
    offset_sec: i64,
}

impl Interface {
    fn ts_ns(&self, high: u32, low: u32) -> u64 {
        let units = (u64::from(high) << 32) | u64::from(low);
        let ns = if self.units_per_sec == NANOS_PER_SEC {
            units
        } else if self.units_per_sec != 0 && NANOS_PER_SEC.is_multiple_of(self.units_per_sec) {
            units.saturating_mul(NANOS_PER_SEC / self.units_per_sec)
        } else {
            let ns = u128::from(units) * u128::from(NANOS_PER_SEC)
                / u128::from(self.units_per_sec.max(1));
            u64::try_from(ns).unwrap_or(u64::MAX)
        };
        let offset_ns = i128::from(self.offset_sec) * i128::from(NANOS_PER_SEC);
        let ts = i128::from(ns) + offset_ns;
        u64::try_from(ts.max(0)).unwrap_or(u64::MAX)
    }
}

/// What one parse step found, with no borrow of the buffer left (the frame bytes are
/// re-sliced from the buffer afterwards: this keeps the lending iterator borrow-checkable).
enum Step {
    Frame {
        consume: usize,
        start: usize,
        len: usize,
        ts_ns: u64,
        linktype: u32,
        orig_len: u32,
    },
    Skip(usize),
    Refill,
    Grow,
    End(Option<Damage>),
}

/// The byte stream under pcap-parser. Its first read goes on until the file header is
/// whole (pcap-parser parses the header from that one read, and a pipe or a gzip stream
/// may return less), or the stream ends; later reads return what is available. Neither
/// waits for more than that, so a live pipe is never held back (a first read that filled
/// the whole buffer held a trickling capture's packets until a megabyte had arrived). It
/// also keeps the last I/O error's text (pcap-parser drops the cause).
struct FillingReader {
    inner: Box<dyn Read + Send>,
    first_read: bool,
    deferred: Option<io::Error>,
    last_error: Arc<Mutex<Option<String>>>,
}

/// pcap-parser's pcapng reader, refusing a block shorter than pcapng's 12-byte minimum
/// before parsing it: pcap-parser 0.17 subtracts 12 from a process information block's
/// length before checking it (an overflow panic where overflow checks are on; a fuzzer find).
/// A wrapper, so that classic pcap reading does not pay for the check.
struct CheckedPcapNg {
    inner: PcapNGReader<FillingReader>,
    /// Byte order of the current section, from its header's byte-order magic.
    big_endian: bool,
    /// Set with the refused block's length, for the warning.
    refused: Arc<Mutex<Option<u32>>>,
}

impl CheckedPcapNg {
    /// The length field of the block at the front of the buffer, if it is below 12.
    fn short_block(&mut self) -> Option<u32> {
        let (big_endian, len) = ng_block_head(self.inner.data(), self.big_endian)?;
        self.big_endian = big_endian;
        (len < 12).then_some(len)
    }
}

/// The byte order and length field of the pcapng block at the front of `data`: a section
/// header's own byte-order magic decides its order, other blocks are in their section's
/// (`section_big_endian`). `None` while too few bytes are buffered to tell.
fn ng_block_head(data: &[u8], section_big_endian: bool) -> Option<(bool, u32)> {
    let big_endian = if data.get(0..4)? == [0x0a, 0x0d, 0x0d, 0x0a] {
        data.get(8..12)? == [0x1a, 0x2b, 0x3c, 0x4d]
    } else {
        section_big_endian
    };
    Some((big_endian, u32_at(data, 4, big_endian)?))
}

/// Bytes of the classic pcap record at the front of `data` (header included), from its
/// caplen field, if the field is there. The "modified" format's header is 24 bytes.
pub(super) fn pcap_record_len(data: &[u8], big_endian: bool, modified: bool) -> Option<usize> {
    Some(pcap_record_header(modified).saturating_add(u32_at(data, 8, big_endian)? as usize))
}

/// Bytes of a classic pcap record header: 16, or 24 in the "modified" format.
pub(super) fn pcap_record_header(modified: bool) -> usize {
    if modified {
        24
    } else {
        16
    }
}

/// The 32-bit number at byte `at` of `data`, if that far is buffered.
fn u32_at(data: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let b: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

impl PcapReaderIterator for CheckedPcapNg {
    fn next(&mut self) -> Result<(usize, PcapBlockOwned<'_>), PcapError<&[u8]>> {
        if let Some(len) = self.short_block() {
            if let Ok(mut refused) = self.refused.lock() {
                *refused = Some(len);
            }
            return Err(PcapError::HeaderNotRecognized);
        }
        self.inner.next()
    }
    fn consume(&mut self, offset: usize) {
        self.inner.consume(offset)
    }
    fn consume_noshift(&mut self, offset: usize) {
        self.inner.consume_noshift(offset)
    }
    fn consumed(&self) -> usize {
        self.inner.consumed()
    }
    fn refill(&mut self) -> Result<(), PcapError<&[u8]>> {
        self.inner.refill()
    }
    fn position(&self) -> usize {
        self.inner.position()
    }
    fn grow(&mut self, new_size: usize) -> bool {
        self.inner.grow(new_size)
    }
    fn data(&self) -> &[u8] {
        self.inner.data()
    }
    fn reader_exhausted(&self) -> bool {
        self.inner.reader_exhausted()
    }
}

/// Bytes of the file header at the front of `head`, as far as `head` tells: the classic
/// pcap header's 24 bytes, or a pcapng section header block's length (in its own byte
/// order); 12 until a pcapng block's length can be read.
fn header_len(head: &[u8]) -> usize {
    if head.len() < 4 || head[..4] != [0x0a, 0x0d, 0x0d, 0x0a] {
        return 24;
    }
    if head.len() < 12 {
        return 12;
    }
    let big_endian = head[8..12] == [0x1a, 0x2b, 0x3c, 0x4d];
    u32_at(head, 4, big_endian).map_or(12, |n| (n as usize).max(12))
}

impl FillingReader {
    fn record(&self, e: &io::Error) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(e.to_string());
        }
    }
}

impl Read for FillingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.deferred.take() {
            self.record(&e);
            return Err(e);
        }
        let fill = std::mem::replace(&mut self.first_read, false);
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    if !fill || n >= header_len(&buf[..n]) {
                        break;
                    }
                }
                // A stop request (SIGINT/SIGTERM) interrupts a blocked read: the stream
                // ends here, and the run writes what it has.
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        && crate::process::signals::interrupted().is_some() =>
                {
                    break
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if n > 0 => {
                    // Deliver what was read; report the error on the next call.
                    self.deferred = Some(e);
                    break;
                }
                Err(e) => {
                    self.record(&e);
                    return Err(e);
                }
            }
        }
        Ok(n)
    }
}

/// Streams the frames of one capture. See the module docs for the damage rules.
///
/// ```no_run
/// # use netfm::capture::{CaptureReader, Input};
/// let mut reader = CaptureReader::open(&Input::File("x.pcap".into()))?;
/// while let Some(frame) = reader.next_frame() {
///     let _ = (frame.linktype, frame.data);
/// }
/// if let Some(w) = reader.warning() {
///     eprintln!("warning: {w}");
/// }
/// # Ok::<(), netfm::capture::CaptureError>(())
/// ```
pub struct CaptureReader {
    path: PathBuf,
    format: CaptureFormat,
    gzip: bool,
    inner: Box<dyn PcapReaderIterator + Send>,
    read_error: Arc<Mutex<Option<String>>>,
    /// Length of a pcapng block refused as too short (see `CheckedPcapNg`).
    refused_block: Arc<Mutex<Option<u32>>>,
    /// Bytes of the frame handed out last, consumed at the next call.
    pending_consume: usize,
    done: bool,
    warning: Option<CaptureWarning>,
    max_buffer: usize,
    /// Buffer capacity (pcap-parser does not expose it).
    capacity: usize,
    /// Classic pcap: link type and the multiplier from the fraction field to ns.
    legacy_linktype: u32,
    legacy_frac_to_ns: u64,
    /// pcapng: interfaces of the current section, and its byte order.
    interfaces: Vec<Interface>,
    section_big_endian: bool,
    /// Timestamp of the last frame (simple packet blocks carry none).
    last_ts_ns: u64,
    stats: CaptureStats,
}

impl CaptureReader {
    /// Opens a capture (gzip or not) with the default buffer limits.
    pub fn open(input: &Input) -> Result<Self, CaptureError> {
        Self::open_with_buffer(input, INITIAL_BUFFER, MAX_BUFFER)
    }

    /// Opens a capture with the given initial and maximum buffer sizes.
    pub fn open_with_buffer(
        input: &Input,
        initial: usize,
        max: usize,
    ) -> Result<Self, CaptureError> {
        let opened = match input {
            Input::Stdin => sniff_stream(Box::new(std::io::stdin()), &input.path())?,
            Input::File(path) => {
                let file = File::open(path).map_err(|source| io_err(path, source))?;
                match Self::open_mapped(path, file, initial, max)? {
                    Ok(reader) => return Ok(reader),
                    Err(file) => sniff_stream(Box::new(file), path)?,
                }
            }
        };
        Self::from_stream(
            input.path(),
            opened.stream,
            opened.magic,
            opened.gzip,
            initial,
            max,
        )
    }

    /// Reads a capture from any byte stream (gzip or not); `name` is used in messages.
    pub fn from_reader(
        name: impl Into<PathBuf>,
        reader: Box<dyn Read + Send>,
    ) -> Result<Self, CaptureError> {
        Self::from_reader_with_buffer(name, reader, INITIAL_BUFFER, MAX_BUFFER)
    }

    /// [`CaptureReader::from_reader`] with the given initial and maximum buffer sizes.
    pub fn from_reader_with_buffer(
        name: impl Into<PathBuf>,
        reader: Box<dyn Read + Send>,
        initial: usize,
        max: usize,
    ) -> Result<Self, CaptureError> {
        let name = name.into();
        let opened = sniff_stream(reader, &name)?;
        Self::from_stream(name, opened.stream, opened.magic, opened.gzip, initial, max)
    }

    /// Opens a plain classic pcap file through a memory map (see `mapped.rs`). The inner
    /// `Err` gives the file back, unread, when it is anything else or cannot be mapped: the
    /// streaming reader then takes it.
    fn open_mapped(
        path: &Path,
        file: File,
        initial: usize,
        max: usize,
    ) -> Result<Result<Self, File>, CaptureError> {
        let Ok(meta) = file.metadata() else {
            return Ok(Err(file));
        };
        // Read at an offset: the file's position stays at 0 for the streaming reader.
        let mut head = [0u8; 4];
        if !meta.is_file()
            || meta.len() < 24
            || file.read_exact_at(&mut head, 0).is_err()
            || classify(&head) != Some(Magic::Pcap)
        {
            return Ok(Err(file));
        }
        let (initial, max) = buffer_limits(initial, max);
        let read_error = Arc::new(Mutex::new(None));
        let mapped = match MappedPcap::open(file, meta.len(), max, Arc::clone(&read_error)) {
            Ok(mapped) => mapped,
            Err(file) => return Ok(Err(file)),
        };
        let mut reader = Self::with_inner(
            path.to_path_buf(),
            Box::new(mapped),
            false,
            (initial, max),
            read_error,
            Arc::new(Mutex::new(None)),
        );
        reader.read_legacy_header()?;
        Ok(Ok(reader))
    }

    fn from_stream(
        path: PathBuf,
        stream: Box<dyn Read + Send>,
        magic: Magic,
        gzip: bool,
        initial: usize,
        max: usize,
    ) -> Result<Self, CaptureError> {
        let (initial, max) = buffer_limits(initial, max);
        let read_error = Arc::new(Mutex::new(None));
        let refused_block = Arc::new(Mutex::new(None));
        let filling = FillingReader {
            inner: stream,
            first_read: true,
            deferred: None,
            last_error: Arc::clone(&read_error),
        };
        let inner: Result<Box<dyn PcapReaderIterator + Send>, String> = match magic {
            Magic::PcapNg => PcapNGReader::new(initial, filling)
                .map(|inner| {
                    Box::new(CheckedPcapNg {
                        inner,
                        big_endian: false,
                        refused: Arc::clone(&refused_block),
                    }) as Box<dyn PcapReaderIterator + Send>
                })
                .map_err(|e| header_error_message(&e, &read_error)),
            Magic::Pcap => LegacyPcapReader::new(initial, filling)
                .map(|r| Box::new(r) as Box<dyn PcapReaderIterator + Send>)
                .map_err(|e| header_error_message(&e, &read_error)),
        };
        let inner = inner.map_err(|message| CaptureError::BadHeader {
            path: path.clone(),
            message,
        })?;
        let mut reader =
            Self::with_inner(path, inner, gzip, (initial, max), read_error, refused_block);
        if magic == Magic::Pcap {
            reader.read_legacy_header()?;
        }
        Ok(reader)
    }

    /// A reader over `inner`; `read_error` and `refused_block` are the slots `inner`
    /// reports the cause of a read error and a refused pcapng block in.
    fn with_inner(
        path: PathBuf,
        inner: Box<dyn PcapReaderIterator + Send>,
        gzip: bool,
        (initial, max): (usize, usize),
        read_error: Arc<Mutex<Option<String>>>,
        refused_block: Arc<Mutex<Option<u32>>>,
    ) -> Self {
        CaptureReader {
            path,
            format: CaptureFormat::PcapNg,
            gzip,
            inner,
            read_error,
            refused_block,
            pending_consume: 0,
            done: false,
            warning: None,
            max_buffer: max,
            capacity: initial,
            legacy_linktype: 0,
            legacy_frac_to_ns: 1000,
            interfaces: Vec::new(),
            section_big_endian: false,
            last_ts_ns: 0,
            stats: CaptureStats::default(),
        }
    }
}

/// The buffer sizes a reader really uses: at least 64 bytes to start, growing to no less.
fn buffer_limits(initial: usize, max: usize) -> (usize, usize) {
    let initial = initial.max(64);
    (initial, max.max(initial))
}

/// Why a capture ended before its natural end.
enum Damage {
    Truncated,
    TooLarge(usize),
    Read,
    Corrupt(String),
    /// The parser refused the record or block at the current position.
    Malformed,
}

fn header_error_message(e: &PcapError<&[u8]>, read_error: &Mutex<Option<String>>) -> String {
    match e {
        PcapError::Incomplete(_) | PcapError::Eof | PcapError::UnexpectedEof => {
            "the file ends inside its header".to_string()
        }
        PcapError::ReadError => {
            let cause = read_error
                .lock()
                .ok()
                .and_then(|s| s.clone())
                .unwrap_or_default();
            format!("read error: {cause}")
        }
        other => other.to_string(),
    }
}

impl CaptureReader {
    fn read_legacy_header(&mut self) -> Result<(), CaptureError> {
        let size = match self.inner.next() {
            Ok((size, PcapBlockOwned::LegacyHeader(h))) => {
                // The upper bits of the field may carry FCS information (libpcap's
                // LT_LINKTYPE): the link type is the low 16 bits.
                self.legacy_linktype = (h.network.0 as u32) & 0xffff;
                self.legacy_frac_to_ns = if h.is_nanosecond_precision() { 1 } else { 1000 };
                self.format = CaptureFormat::Pcap {
                    big_endian: h.is_bigendian(),
                    nanosecond: h.is_nanosecond_precision(),
                    modified: h.is_modified_format(),
                };
                size
            }
            Ok(_) => {
                return Err(CaptureError::BadHeader {
                    path: self.path.clone(),
                    message: "no pcap file header".into(),
                })
            }
            Err(e) => {
                let message = header_error_message(&e, &self.read_error);
                return Err(CaptureError::BadHeader {
                    path: self.path.clone(),
                    message,
                });
            }
        };
        self.inner.consume(size);
        Ok(())
    }

    /// The next frame, or `None` at the end of the capture or at the first damage (then
    /// [`CaptureReader::warning`] says where). The frame borrows the reader's buffer.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        if self.pending_consume > 0 {
            self.inner.consume(self.pending_consume);
            self.pending_consume = 0;
        }
        while !self.done {
            let offset = self.inner.consumed() as u64;
            match self.step() {
                Step::Frame {
                    consume,
                    start,
                    len,
                    ts_ns,
                    linktype,
                    orig_len,
                } => {
                    let end = start.checked_add(len);
                    if end.is_none_or(|end| end > self.inner.data().len()) {
                        // Cannot happen with pcap-parser's slices; guard anyway.
                        self.finish(
                            offset,
                            Damage::Corrupt("frame outside the read buffer".into()),
                        );
                        continue;
                    }
                    self.pending_consume = consume;
                    self.last_ts_ns = ts_ns;
                    self.stats.frames += 1;
                    let data = &self.inner.data()[start..start + len];
                    return Some(Frame {
                        ts_ns,
                        linktype,
                        data,
                        orig_len,
                        byte_offset: offset,
                    });
                }
                Step::Skip(n) => self.inner.consume(n),
                Step::Refill => self.refill(offset),
                Step::Grow => self.grow(offset),
                Step::End(None) => self.done = true,
                Step::End(Some(damage)) => self.finish(offset, damage),
            }
        }
        None
    }

    /// One parse attempt at the current position.
    fn step(&mut self) -> Step {
        let base = self.inner.data().as_ptr() as usize;
        match self.inner.next() {
            Ok((size, PcapBlockOwned::Legacy(b))) => Step::Frame {
                consume: size,
                start: (b.data.as_ptr() as usize).wrapping_sub(base),
                len: b.data.len(),
                ts_ns: u64::from(b.ts_sec) * NANOS_PER_SEC
                    + u64::from(b.ts_usec) * self.legacy_frac_to_ns,
                linktype: self.legacy_linktype,
                orig_len: b.origlen,
            },
            Ok((size, PcapBlockOwned::LegacyHeader(_))) => Step::Skip(size),
            Ok((size, PcapBlockOwned::NG(block))) => ng_step(
                size,
                &block,
                base,
                &mut self.interfaces,
                &mut self.section_big_endian,
                self.last_ts_ns,
                &mut self.stats,
            ),
            Err(PcapError::Eof) => Step::End(None),
            Err(PcapError::Incomplete(_)) => Step::Refill,
            Err(PcapError::BufferTooSmall) => Step::Grow,
            Err(PcapError::UnexpectedEof) => Step::End(Some(Damage::Truncated)),
            Err(PcapError::ReadError) => Step::End(Some(Damage::Read)),
            Err(PcapError::HeaderNotRecognized) => {
                let refused = self.refused_block.lock().ok().and_then(|r| *r);
                Step::End(Some(Damage::Corrupt(match refused {
                    Some(len) => format!("block length {len}, below the 12-byte minimum"),
                    None => "unrecognised block".into(),
                })))
            }
            Err(PcapError::NomError(..)) | Err(PcapError::OwnedNomError(..)) => {
                Step::End(Some(Damage::Malformed))
            }
        }
    }

    fn refill(&mut self, offset: u64) {
        let before = self.inner.data().len();
        if self.inner.refill().is_err() {
            self.finish(offset, Damage::Read);
            return;
        }
        if self.inner.data().len() == before && !self.inner.reader_exhausted() {
            // The buffer is full and the block still incomplete.
            self.grow(offset);
        }
    }

    fn grow(&mut self, offset: u64) {
        let capacity = self.capacity;
        let needed = self
            .pending_block_len()
            .unwrap_or(capacity.saturating_mul(2));
        if needed > self.max_buffer || capacity >= self.max_buffer {
            self.finish(offset, Damage::TooLarge(needed));
            return;
        }
        let new_size = needed
            .next_power_of_two()
            .max(capacity.saturating_mul(2))
            .min(self.max_buffer);
        self.inner.grow(new_size);
        self.capacity = self.capacity.max(new_size);
        if self.inner.refill().is_err() {
            self.finish(offset, Damage::Read);
        }
    }

    /// Size of the record/block at the current position, from its header, if readable.
    fn pending_block_len(&self) -> Option<usize> {
        let data = self.inner.data();
        match self.format {
            CaptureFormat::Pcap {
                big_endian,
                modified,
                ..
            } => pcap_record_len(data, big_endian, modified),
            CaptureFormat::PcapNg => Some(ng_block_head(data, self.section_big_endian)?.1 as usize),
        }
    }

    fn finish(&mut self, offset: u64, damage: Damage) {
        self.done = true;
        let message = match damage {
            Damage::Truncated => format!(
                "the capture ends inside a {} ({} bytes of it present): truncated file",
                self.unit_name(),
                self.inner.data().len()
            ),
            Damage::TooLarge(n) => format!(
                "a {} claims {n} bytes, more than the {} byte limit: corrupt file",
                self.unit_name(),
                self.max_buffer
            ),
            Damage::Read => {
                let cause = self.read_error.lock().ok().and_then(|s| s.clone());
                format!("read error: {}", cause.unwrap_or_else(|| "unknown".into()))
            }
            Damage::Corrupt(what) => format!("corrupt {}: {what}", self.unit_name()),
            Damage::Malformed => {
                format!("corrupt {}: {}", self.unit_name(), self.malformed_detail())
            }
        };
        self.warning = Some(CaptureWarning {
            path: self.path.clone(),
            byte_offset: offset,
            message,
        });
    }

    /// What is wrong with the record or block the parser refused (at the buffer's front):
    /// what its header says, and why that cannot be.
    fn malformed_detail(&self) -> String {
        let data = self.inner.data();
        match self.format {
            CaptureFormat::PcapNg => match ng_block_head(data, self.section_big_endian) {
                Some((big_endian, len)) => {
                    let kind = u32_at(data, 0, big_endian).unwrap_or(0);
                    let trailer = (len as usize)
                        .checked_sub(4)
                        .and_then(|at| u32_at(data, at, big_endian));
                    let name = match kind {
                        0x0a0d_0d0a => "section header",
                        0x0000_0001 => "interface description",
                        0x0000_0006 => "enhanced packet",
                        0x0000_0003 => "simple packet",
                        0x0000_0002 => "packet (obsolete)",
                        0x0000_0004 => "name resolution",
                        0x0000_0005 => "interface statistics",
                        _ => "unknown",
                    };
                    let a = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    };
                    match trailer {
                        Some(t) if t != len => format!(
                            "{a} {name} block (type 0x{kind:08x}) says it is {len} bytes long at its start and {t} at its end"
                        ),
                        _ => format!(
                            "{a} {name} block (type 0x{kind:08x}, {len} bytes) whose fields do not fit its length or hold impossible values"
                        ),
                    }
                }
                None => "a block header that cannot be read".to_string(),
            },
            CaptureFormat::Pcap { big_endian, .. } => {
                let caplen = u32_at(data, 8, big_endian);
                let origlen = u32_at(data, 12, big_endian);
                match (caplen, origlen) {
                    (Some(c), Some(o)) => format!(
                        "a record header with captured length {c} and original length {o}, which cannot both be right"
                    ),
                    _ => "a record header that cannot be read".to_string(),
                }
            }
        }
    }

    fn unit_name(&self) -> &'static str {
        match self.format {
            CaptureFormat::Pcap { .. } => "pcap record",
            CaptureFormat::PcapNg => "pcapng block",
        }
    }

    /// The input's name as given (`-` for stdin).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container format.
    pub fn format(&self) -> CaptureFormat {
        self.format
    }

    /// Whether the input was gzip compressed.
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    /// The damage that ended this capture early, if any.
    pub fn warning(&self) -> Option<&CaptureWarning> {
        self.warning.as_ref()
    }

    /// Counters so far.
    pub fn stats(&self) -> CaptureStats {
        self.stats
    }
}

/// Handles one pcapng block. Free function so the block can keep borrowing the reader's
/// buffer while the interface table (another field) is updated.
fn ng_step(
    size: usize,
    block: &Block<'_>,
    base: usize,
    interfaces: &mut Vec<Interface>,
    section_big_endian: &mut bool,
    last_ts_ns: u64,
    stats: &mut CaptureStats,
) -> Step {
    match block {
        Block::SectionHeader(shb) => {
            // A new section starts a new interface numbering (and maybe byte order).
            interfaces.clear();
            *section_big_endian = shb.big_endian();
            Step::Skip(size)
        }
        Block::InterfaceDescription(idb) => {
            interfaces.push(Interface {
                linktype: (idb.linktype.0 as u32) & 0xffff,
                snaplen: idb.snaplen,
                // An undefined resolution falls back to the pcapng default (microseconds).
                units_per_sec: units_per_sec(idb.if_tsresol).unwrap_or(1_000_000),
                offset_sec: ts_offset(&idb.options, *section_big_endian),
            });
            Step::Skip(size)
        }
        Block::EnhancedPacket(epb) => match interfaces.get(epb.if_id as usize) {
            Some(iface) => {
                let data = epb.packet_data();
                Step::Frame {
                    consume: size,
                    start: (data.as_ptr() as usize).wrapping_sub(base),
                    len: data.len(),
                    ts_ns: iface.ts_ns(epb.ts_high, epb.ts_low),
                    linktype: iface.linktype,
                    orig_len: epb.origlen,
                }
            }
            None => {
                stats.unknown_interface_frames += 1;
                Step::Skip(size)
            }
        },
        Block::SimplePacket(spb) => match interfaces.first() {
            Some(iface) => {
                let mut len = spb.data.len().min(spb.origlen as usize);
                if iface.snaplen != 0 {
                    len = len.min(iface.snaplen as usize);
                }
                Step::Frame {
                    consume: size,
                    start: (spb.data.as_ptr() as usize).wrapping_sub(base),
                    len,
                    // A simple packet block has no timestamp: reuse the previous frame's.
                    ts_ns: last_ts_ns,
                    linktype: iface.linktype,
                    orig_len: spb.origlen,
                }
            }
            None => {
                stats.unknown_interface_frames += 1;
                Step::Skip(size)
            }
        },
        _ => {
            stats.other_blocks += 1;
            Step::Skip(size)
        }
    }
}

/// `if_tsresol` as units per second: 10^v, or 2^(v & 0x7f) when the high bit is set.
/// (pcap-parser's own helper rejects every power-of-two resolution.)
fn units_per_sec(tsresol: u8) -> Option<u64> {
    if tsresol & 0x80 != 0 {
        let exp = u32::from(tsresol & 0x7f);
        (exp <= 63).then(|| 1u64 << exp)
    } else {
        10u64.checked_pow(u32::from(tsresol))
    }
}

/// `if_tsoffset` in the section's byte order (pcap-parser's own field assumes little-endian).
fn ts_offset(options: &[PcapNGOption<'_>], big_endian: bool) -> i64 {
    options
        .iter()
        .find(|o| o.code == OptionCode::IfTsoffset)
        .and_then(|o| <[u8; 8]>::try_from(o.value.get(..8)?).ok())
        .map(|b| {
            if big_endian {
                i64::from_be_bytes(b)
            } else {
                i64::from_le_bytes(b)
            }
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_resolutions() {
        assert_eq!(units_per_sec(6), Some(1_000_000));
        assert_eq!(units_per_sec(9), Some(NANOS_PER_SEC));
        assert_eq!(units_per_sec(0x80 | 10), Some(1024));
        assert_eq!(units_per_sec(20), None);
        assert_eq!(units_per_sec(0x80 | 64), None);
    }

    #[test]
    fn interface_timestamps_to_nanoseconds() {
        let iface = |units_per_sec, offset_sec| Interface {
            linktype: 1,
            snaplen: 0,
            units_per_sec,
            offset_sec,
        };
        // Microseconds: 1.5 s.
        assert_eq!(iface(1_000_000, 0).ts_ns(0, 1_500_000), 1_500_000_000);
        // 2^-10 s units, +2 s offset: 1.5 s + 2 s.
        assert_eq!(iface(1024, 2).ts_ns(0, 1536), 3_500_000_000);
        // A negative offset never goes below the epoch; huge values saturate.
        assert_eq!(iface(1, -10).ts_ns(0, 5), 0);
        assert_eq!(iface(1, 0).ts_ns(u32::MAX, u32::MAX), u64::MAX);
        assert_eq!(iface(3, 0).ts_ns(0, 3), NANOS_PER_SEC);
    }
}
