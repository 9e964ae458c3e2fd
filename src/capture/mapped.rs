//! Classic pcap files read through a read-only memory map: records are parsed in place by
//! pcap-parser's frame parsers, so the file's bytes are never copied into a read buffer
//! (the kernel's copy into that buffer and the buffer's refills were about a tenth of a
//! tokenize run's CPU time; see `benches/README.md`).
//!
//! Used for plain (not gzip) classic pcap files only; pcapng, gzip, stdin and anything
//! that cannot be mapped go through the streaming reader. The frames, warnings and byte
//! offsets are the streaming reader's: `tests/capture_robustness.rs` reads every capture
//! both ways and compares.
//!
//! Memory stays bounded: pages already parsed are dropped from the mapping as the reader
//! moves on (they stay in the page cache), so no more than about [`WINDOW`] bytes of the
//! file are resident in the process at once, however large it is.
//!
//! Touching a mapped page the kernel cannot read (an I/O error, or a page another process
//! truncated away) raises SIGBUS instead of returning an error. So the reader never touches
//! a page it has not first faulted in with `MADV_POPULATE_READ`, a window at a time: that
//! call reports such a failure as an error. The file then ends at the record that reaches
//! the unreadable page, with a "read error" warning (naming the new size if the file
//! shrank), like a failing `read`. What remains is a race no check can close: a file
//! truncated after its window was faulted in. Captures being appended to (a running
//! `tcpdump -w`) are safe: the map covers the size the file had when it was opened. On
//! kernels without `MADV_POPULATE_READ` (before 5.14) pages fault in on first touch.

use super::reader::{pcap_record_header, pcap_record_len};
use netfm_tokenizer::hint::prefetch_bytes;
use pcap_parser::nom;
use pcap_parser::pcap::{
    parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header,
    LegacyPcapBlock, PcapHeader,
};
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{PcapBlockOwned, PcapError};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

/// Parsed pages are released from the mapping once this many bytes lie behind the read
/// position, and pages ahead are faulted in this many bytes at a time.
pub(crate) const WINDOW: usize = 8 << 20;
/// How far ahead of the read position records are prefetched, and how many bytes.
const PREFETCH_AHEAD: usize = 2048;
const PREFETCH_LEN: usize = 192;

type ParseFn = fn(&[u8]) -> nom::IResult<&[u8], LegacyPcapBlock<'_>, PcapError<&[u8]>>;

/// A read-only private mapping of a whole file.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; moving it to another
// thread moves nothing but the address.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(file: &File, len: usize) -> Option<Mapping> {
        if len == 0 {
            return None;
        }
        // SAFETY: a fresh read-only private mapping of an open file; the kernel picks the
        // address. Failure is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        Some(Mapping { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }

    /// Advises the kernel about `[start, end)` (page-aligned inward); errors are ignored:
    /// advice only changes speed and residency, never what is read.
    fn advise(&self, start: usize, end: usize, advice: libc::c_int) {
        let page = page_size();
        let start = start.next_multiple_of(page);
        let end = end.min(self.len) / page * page;
        if start >= end {
            return;
        }
        // SAFETY: the range lies inside this mapping (clamped above); none of the advice
        // used changes the mapping's contents, and released pages are never borrowed again
        // (they lie before the read position).
        unsafe {
            libc::madvise(self.ptr.cast::<u8>().add(start).cast(), end - start, advice);
        }
    }

    /// Faults in the pages covering `[start, end)` for reading. An error means some page
    /// in the range cannot be read (`EFAULT`: beyond the file's end; `EIO`: the device
    /// failed), or `EINVAL` where the kernel lacks `MADV_POPULATE_READ`.
    fn populate(&self, start: usize, end: usize) -> std::io::Result<()> {
        let page = page_size();
        let start = start / page * page;
        let end = end.min(self.len).next_multiple_of(page);
        if start >= end {
            return Ok(());
        }
        // SAFETY: the range lies inside this mapping (which covers `len` rounded up to whole
        // pages); populating only maps pages, it never changes their contents.
        let rc = unsafe {
            libc::madvise(
                self.ptr.cast::<u8>().add(start).cast(),
                end - start,
                libc::MADV_POPULATE_READ,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`, once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// A mapped classic pcap file behind pcap-parser's reader interface.
pub(crate) struct MappedPcap {
    /// Kept open to tell a shrunk file from a failing one.
    file: File,
    map: Mapping,
    header: PcapHeader,
    parse: ParseFn,
    /// The Kuznetzov "modified" format (24-byte record headers).
    modified: bool,
    big_endian: bool,
    /// A record claiming more bytes than this is reported as too large (as the streaming
    /// reader does when its buffer may not grow that far).
    max_record: usize,
    pos: usize,
    /// Pages before this offset have been released.
    released: usize,
    /// Bytes before this offset have been faulted in: reading them cannot raise SIGBUS.
    ready: usize,
    /// `MADV_POPULATE_READ` works here; without it pages fault in on first touch.
    checked: bool,
    /// Why the bytes from `ready` on cannot be read, once known.
    failure: Option<String>,
    /// Where the reader's "read error" warning takes its cause from.
    read_error: Arc<Mutex<Option<String>>>,
}

impl MappedPcap {
    /// Maps `file` (`len` bytes) if it holds a readable classic pcap header. `Err` gives the
    /// file back untouched for the streaming reader (which then reports whatever is wrong
    /// with it).
    pub(crate) fn open(
        file: File,
        len: u64,
        max_record: usize,
        read_error: Arc<Mutex<Option<String>>>,
    ) -> Result<MappedPcap, File> {
        let Some(map) = usize::try_from(len)
            .ok()
            .and_then(|len| Mapping::new(&file, len))
        else {
            return Err(file);
        };
        let len = map.len;
        // The header's page must be readable before it is parsed.
        let checked = match map.populate(0, 24) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
            Err(_) => return Err(file),
        };
        let Ok((_, header)) = parse_pcap_header(map.bytes()) else {
            return Err(file);
        };
        let modified = header.is_modified_format();
        let parse: ParseFn = if modified {
            parse_pcap_frame_modified
        } else if header.is_bigendian() {
            parse_pcap_frame_be
        } else {
            parse_pcap_frame
        };
        map.advise(0, len, libc::MADV_SEQUENTIAL);
        Ok(MappedPcap {
            big_endian: header.is_bigendian() && !modified,
            file,
            map,
            header,
            parse,
            modified,
            max_record,
            pos: 0,
            released: 0,
            ready: if checked { 24 } else { len },
            checked,
            failure: None,
            read_error,
        })
    }

    /// Makes the bytes before `end` safe to read, faulting in at least a window ahead.
    /// `false` if some of them cannot be read (the reason is kept in `failure`).
    fn ensure(&mut self, end: usize) -> bool {
        let end = end.min(self.map.len);
        if end <= self.ready {
            return true;
        }
        if self.failure.is_some() {
            return false;
        }
        let target = end.max(self.ready.saturating_add(WINDOW)).min(self.map.len);
        match self.map.populate(self.ready, target) {
            Ok(()) => {
                self.ready = target;
                return true;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !self.checked => {
                self.ready = self.map.len;
                return true;
            }
            Err(_) => {}
        }
        // Find the first page that cannot be read; everything before it is fine.
        let page = page_size();
        let mut at = self.ready / page * page;
        let error = loop {
            if at >= target {
                break None;
            }
            match self.map.populate(at, at + page) {
                Ok(()) => at += page,
                Err(e) => break Some(e),
            }
        };
        let Some(error) = error else {
            // Readable after all on a second try.
            self.ready = target;
            return true;
        };
        self.ready = at.max(self.ready);
        let now = self.file.metadata().map(|m| m.len()).ok();
        self.failure = Some(match now {
            Some(n) if n < self.map.len as u64 => {
                // The page holding the new end reads as zeros past it: not data.
                self.ready = self.ready.min(n as usize);
                format!(
                    "the file shrank from {} to {n} bytes while it was read",
                    self.map.len
                )
            }
            _ => format!("cannot read the file at byte {at}: {error}"),
        });
        end <= self.ready
    }

    /// Reports the failure found by [`MappedPcap::ensure`] as pcap-parser's read error.
    fn read_failure(&self) -> PcapError<&'static [u8]> {
        if let Ok(mut slot) = self.read_error.lock() {
            *slot = self.failure.clone();
        }
        PcapError::ReadError
    }

    /// Length the record at the read position claims (header included), if its header is
    /// all there.
    fn claimed_len(&self) -> Option<usize> {
        pcap_record_len(self.rest(), self.big_endian, self.modified)
    }

    fn rest(&self) -> &[u8] {
        self.map.bytes().get(self.pos..).unwrap_or(&[])
    }

    fn advance(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.map.len);
        // The hardware prefetcher stops at page boundaries; ask for the records a little
        // ahead explicitly (measured: the reader stage 6-8% faster).
        prefetch_bytes(
            self.map
                .bytes()
                .as_ptr()
                .wrapping_add(self.pos + PREFETCH_AHEAD),
            PREFETCH_LEN,
        );
        if self.pos - self.released >= WINDOW {
            self.map
                .advise(self.released, self.pos, libc::MADV_DONTNEED);
            let page = page_size();
            self.released = self.pos / page * page;
        }
    }
}

impl PcapReaderIterator for MappedPcap {
    fn next(&mut self) -> Result<(usize, PcapBlockOwned<'_>), PcapError<&[u8]>> {
        if self.pos == 0 {
            return Ok((
                self.header.size(),
                PcapBlockOwned::from(self.header.clone()),
            ));
        }
        if self.pos >= self.map.len {
            return Err(PcapError::Eof);
        }
        if !self.ensure(self.pos.saturating_add(pcap_record_header(self.modified))) {
            return Err(self.read_failure());
        }
        let claimed = self.claimed_len();
        if claimed.is_some_and(|n| n > self.max_record) {
            return Err(PcapError::BufferTooSmall);
        }
        if let Some(n) = claimed {
            if !self.ensure(self.pos.saturating_add(n)) {
                return Err(self.read_failure());
            }
        }
        let data = self.rest();
        match (self.parse)(data) {
            Ok((rem, block)) => Ok((data.len() - rem.len(), PcapBlockOwned::from(block))),
            Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => Err(e),
            Err(nom::Err::Incomplete(_)) => Err(PcapError::UnexpectedEof),
        }
    }

    fn consume(&mut self, offset: usize) {
        self.advance(offset);
    }

    fn consume_noshift(&mut self, offset: usize) {
        self.advance(offset);
    }

    fn consumed(&self) -> usize {
        self.pos
    }

    fn refill(&mut self) -> Result<(), PcapError<&[u8]>> {
        Ok(())
    }

    fn position(&self) -> usize {
        0
    }

    fn grow(&mut self, _new_size: usize) -> bool {
        false
    }

    fn data(&self) -> &[u8] {
        self.rest()
    }

    fn reader_exhausted(&self) -> bool {
        true
    }
}
