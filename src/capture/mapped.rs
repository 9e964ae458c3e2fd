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
//! The one hazard of mapping a file: if another process truncates it while it is being
//! read, touching the vanished pages raises SIGBUS. Captures being appended to (a running
//! `tcpdump -w`) are safe: the map covers the size the file had when it was opened.

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

/// Parsed pages are released from the mapping once this many bytes lie behind the read
/// position.
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
    map: Mapping,
    header: PcapHeader,
    parse: ParseFn,
    /// Bytes of a record header (16, or 24 in the "modified" format).
    record_header: usize,
    big_endian: bool,
    /// A record claiming more bytes than this is reported as too large (as the streaming
    /// reader does when its buffer may not grow that far).
    max_record: usize,
    pos: usize,
    /// Pages before this offset have been released.
    released: usize,
}

impl MappedPcap {
    /// Maps `file` (`len` bytes) if it holds a readable classic pcap header. `None` means
    /// "use the streaming reader" (it then reports whatever is wrong with the file).
    pub(crate) fn open(file: &File, len: u64, max_record: usize) -> Option<MappedPcap> {
        let len = usize::try_from(len).ok()?;
        let map = Mapping::new(file, len)?;
        let (_, header) = parse_pcap_header(map.bytes()).ok()?;
        let (parse, record_header): (ParseFn, usize) = if header.is_modified_format() {
            (parse_pcap_frame_modified, 24)
        } else if header.is_bigendian() {
            (parse_pcap_frame_be, 16)
        } else {
            (parse_pcap_frame, 16)
        };
        map.advise(0, len, libc::MADV_SEQUENTIAL);
        Some(MappedPcap {
            big_endian: header.is_bigendian() && !header.is_modified_format(),
            map,
            header,
            parse,
            record_header,
            max_record,
            pos: 0,
            released: 0,
        })
    }

    /// Length the record at the read position claims (header included), if its header is
    /// all there.
    fn claimed_len(&self) -> Option<usize> {
        let b: [u8; 4] = self.rest().get(8..12)?.try_into().ok()?;
        let caplen = if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        };
        Some(self.record_header.saturating_add(caplen as usize))
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
            self.released = self.pos / page_size() * page_size();
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
        if self.claimed_len().is_some_and(|n| n > self.max_record) {
            return Err(PcapError::BufferTooSmall);
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
