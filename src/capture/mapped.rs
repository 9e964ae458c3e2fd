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
//! moves on (they stay in the page cache), so no more than about three [`WINDOW`]s of the
//! file are mapped in the process at once, however large it is.
//!
//! On a large file a helper thread (`netfm-readahead`, at the lowest priority) faults pages
//! in [`LEAD`] bytes ahead of the reader: faulting in was a tenth of the reader's time, and
//! the reader was the pipeline's busiest stage while the flow table fills. Where the helper
//! falls behind, the reader faults in what it needs itself. The reader still releases
//! pages itself, so the bound above holds however late the helper runs (a late helper
//! drops again what it populated behind the reader).
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
use crate::process::page_size;
use crate::process::prefault::{Helper, Populate};
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
/// Files at least this large get a helper thread for their pages (smaller ones are faulted
/// in a window at a time by the reader itself).
const HELPER_MIN_LEN: usize = 4 * WINDOW;
/// How far ahead of the reader the helper keeps pages faulted in.
const LEAD: usize = 2 * WINDOW;
/// The reader moves the helper's target on each time it has read this far.
const ASK_EVERY: usize = 2 << 20;
/// Bytes the reader faults in at a time itself where the helper has not got there yet
/// (without a helper it takes a [`WINDOW`] at a time).
const OWN_CHUNK: usize = 1 << 20;
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

/// A mapped classic pcap file behind pcap-parser's reader interface.
pub(crate) struct MappedPcap {
    /// Kept open to tell a shrunk file from a failing one.
    file: File,
    /// Faults pages in ahead of the reader on a large file; declared before `map` so that it
    /// stops before the mapping goes.
    helper: Option<Helper>,
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
        let helper = if checked && len >= HELPER_MIN_LEN {
            Helper::start("netfm-readahead", map.ptr as usize, Populate::Read)
        } else {
            None
        };
        Ok(MappedPcap {
            helper,
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
        if let Some(h) = &self.helper {
            // What the helper has faulted in is safe. Taking at most ASK_EVERY of it brings
            // the reader back that soon to move the helper's target on, so the helper stays
            // LEAD ahead. Where it is behind (or has failed) the reader faults in what it
            // needs now itself.
            let len = self.map.len;
            if let Some(done) = h.ask(self.ready, end.saturating_add(LEAD).min(len)) {
                let took = done.min(end.saturating_add(ASK_EVERY)).min(len);
                if took > self.ready && (self.take_ready(took, end) || self.failure.is_some()) {
                    return end <= self.ready;
                }
            }
        }
        let step = if self.helper.is_some() {
            OWN_CHUNK
        } else {
            WINDOW
        };
        let target = end.max(self.ready.saturating_add(step)).min(self.map.len);
        match self.map.populate(self.ready, target) {
            Ok(()) => return self.take_ready(target, end),
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
            return self.take_ready(target, end);
        };
        self.ready = at.max(self.ready);
        let now = self.file_len();
        self.failure = Some(if now < self.map.len {
            // The page holding the new end reads as zeros past it: not data.
            self.ready = self.ready.min(now);
            self.shrank_from(now)
        } else {
            format!("cannot read the file at byte {at}: {error}")
        });
        end <= self.ready
    }

    /// Takes the bytes before `to` as safe to read, now that their pages are faulted in;
    /// whether the bytes before `end` are. Faulting in the page that holds the end of a file
    /// truncated since it was opened succeeds, and past the new end that page reads as
    /// zeros, not data: so no more than the file's present size is taken, and a record
    /// reaching past it is the "shrank" failure.
    fn take_ready(&mut self, to: usize, end: usize) -> bool {
        let now = self.file_len();
        self.ready = self.ready.max(to.min(now));
        if end > now {
            self.failure = Some(self.shrank_from(now));
        }
        end <= self.ready
    }

    /// The file's present size (the mapping's if it cannot be read).
    fn file_len(&self) -> usize {
        self.file
            .metadata()
            .ok()
            .and_then(|m| usize::try_from(m.len()).ok())
            .map_or(self.map.len, |n| n.min(self.map.len))
    }

    fn shrank_from(&self, now: usize) -> String {
        format!(
            "the file shrank from {} to {now} bytes while it was read",
            self.map.len
        )
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
            // On this thread, so that the bound on what stays mapped does not depend on
            // the helper being scheduled (a helper running late drops what it populates
            // here again).
            if let Some(h) = &self.helper {
                h.leave(self.pos);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    /// Bytes of the mapping at `ptr` mapped into this process (its `Rss` in smaps).
    fn mapped_bytes(ptr: usize) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((a, b)) = crate::process::thp::mapping_range(line) {
                inside = a <= ptr && ptr < b;
            } else if let (true, Some(kb)) = (inside, line.strip_prefix("Rss:")) {
                let kb = kb.trim().trim_end_matches("kB").trim();
                return kb.parse::<usize>().expect("Rss") << 10;
            }
        }
        panic!("no mapping at {ptr:#x}");
    }

    /// A classic pcap of `len` bytes or a little more: 1,514-byte frames.
    fn big_capture(len: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        let mut head = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
        head.extend_from_slice(&2u16.to_le_bytes());
        head.extend_from_slice(&4u16.to_le_bytes());
        for v in [0u32, 0, 65535, 1] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        let mut record = Vec::new();
        for v in [1u32, 0, 1514, 1514] {
            record.extend_from_slice(&v.to_le_bytes());
        }
        record.resize(16 + 1514, 0xab);
        let mut buf = head;
        while buf.len() < len {
            buf.extend_from_slice(&record);
        }
        f.write_all(&buf).expect("write");
        f
    }

    /// On a large file the helper faults pages in a lead ahead of the reader, and the reader
    /// releases them behind it: the pages mapped at any time stay within a few windows, and
    /// every record comes through.
    #[test]
    fn the_helper_keeps_a_bounded_range_mapped_around_the_reader() {
        let len = 6 * WINDOW;
        let capture = big_capture(len);
        let file = capture.reopen().expect("reopen");
        let size = file.metadata().expect("metadata").len();
        let mut r = MappedPcap::open(file, size, 1 << 20, Arc::default()).unwrap_or_else(|_| {
            panic!("not mapped");
        });
        if !r.checked {
            eprintln!("skipped: this kernel has no MADV_POPULATE_READ (Linux 5.14+)");
            return;
        }
        assert!(r.helper.is_some());
        let base = r.map.ptr as usize;
        let (mut records, mut most_mapped, mut checks) = (0usize, 0usize, 0);
        loop {
            match r.next() {
                Ok((n, PcapBlockOwned::Legacy(b))) => {
                    assert_eq!(b.data.len(), 1514);
                    records += 1;
                    r.consume(n);
                }
                Ok((n, _)) => r.consume(n),
                Err(PcapError::Eof) => break,
                Err(e) => panic!("{e:?}"),
            }
            if records > 0 && records % 4096 == 0 && r.pos < len - LEAD - WINDOW {
                // The helper reaches its lead ahead of the reader (given time), whatever the
                // reader's own position.
                let want = r.pos.saturating_add(LEAD - AHEAD_SLACK);
                let t0 = Instant::now();
                while r.helper.as_ref().map_or(0, |h| h.done()) < want
                    && t0.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let done = r.helper.as_ref().map_or(0, |h| h.done());
                assert!(
                    done >= want,
                    "at {}: the helper is at {done}, not {want}",
                    r.pos
                );
                checks += 1;
                std::thread::sleep(Duration::from_millis(5));
                most_mapped = most_mapped.max(mapped_bytes(base));
            }
        }
        assert_eq!(records, (size as usize - 24) / 1530);
        assert_eq!(checks, 4);
        // Behind: up to a window unreleased (plus a page); ahead: the lead, plus what the
        // reader faulted in itself while the helper started.
        let bound = WINDOW + LEAD + OWN_CHUNK + (64 << 10);
        assert!(
            most_mapped > LEAD / 2 && most_mapped <= bound,
            "{most_mapped} mapped, bound {bound}"
        );
    }

    /// A helper that populates pages the reader has already let go of (it ran late) drops
    /// them again, so what stays mapped is bounded by the reader's releases.
    #[test]
    fn a_late_helper_drops_what_the_reader_has_left_behind() {
        let capture = big_capture(4 * WINDOW);
        let file = capture.reopen().expect("reopen");
        let len = file.metadata().expect("metadata").len() as usize;
        let Some(map) = Mapping::new(&file, len) else {
            panic!("not mapped");
        };
        if map.populate(0, 1).is_err() {
            eprintln!("skipped: this kernel has no MADV_POPULATE_READ (Linux 5.14+)");
            return;
        }
        map.advise(0, len, libc::MADV_DONTNEED);
        let base = map.ptr as usize;
        let h = Helper::start("test-readahead", base, Populate::Read).expect("helper");
        // The reader has moved past 2 windows (and released them) before the helper got to
        // them; it then wants the next window.
        h.leave(2 * WINDOW);
        let want = 3 * WINDOW;
        assert_eq!(h.ask(0, want), Some(0));
        let t0 = Instant::now();
        while h.done() < want && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(h.done() >= want, "{}", h.done());
        drop(h);
        // Only the window past what was left behind stays mapped.
        let mapped = mapped_bytes(base);
        assert!(mapped <= WINDOW + (64 << 10), "{mapped}");
        assert!(mapped >= WINDOW - (64 << 10), "{mapped}");
    }

    /// Populating goes in chunks, so a lead this much short of the full one counts.
    const AHEAD_SLACK: usize = 4 << 20;
}
