//! Differential, on files large enough for the mapped reader's page helper: the fuzz
//! input is a classic pcap header (its first 24 bytes) and a body; the file is the header
//! and the body repeated until it passes the helper's 32 MiB threshold, cut at an offset
//! the input's last two bytes choose. Read through the memory-mapped reader (with its
//! `netfm-readahead` helper running, and the reader's steps, the helper's 2 MiB steps and
//! the releases behind the reader falling anywhere among the records) it must give the
//! same frames, and damage at the same byte offset, as the streaming reader on the same
//! bytes. Any panic or difference is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netfm::capture::{CaptureReader, Input};
use std::io::Write;
use std::path::PathBuf;

const INITIAL: usize = 256;
const MAX: usize = 1 << 16;
/// Above the 32 MiB at which the mapped reader starts its helper.
const MIN_FILE: usize = 33 << 20;
/// The most the input's last two bytes cut off: the file stays at 32 MiB or more.
const _: () = assert!(MIN_FILE - 65535 * 16 >= 32 << 20);
const HEADER: usize = 24;

/// A digest of the frames (their count, a hash of every field and byte, the last frame's
/// timestamp) and the damage offset: a run yields millions of frames, too many to keep.
type Digest = (u64, u64, u64, Option<u64>);

fn digest(reader: Option<CaptureReader>) -> Option<Digest> {
    use std::hash::{Hash, Hasher};
    let mut reader = reader?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let (mut n, mut last_ts) = (0u64, 0u64);
    while let Some(f) = reader.next_frame() {
        (f.ts_ns, f.linktype, f.orig_len, f.data).hash(&mut h);
        n += 1;
        last_ts = f.ts_ns;
    }
    Some((n, h.finish(), last_ts, reader.warning().map(|w| w.byte_offset)))
}

fn scratch_file() -> PathBuf {
    std::env::temp_dir().join(format!(
        "netfm-fuzz-mapped-large-{}.pcap",
        std::process::id()
    ))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER + 3 {
        return;
    }
    let (head, rest) = data.split_at(HEADER);
    let (body, cut) = rest.split_at(rest.len() - 2);
    // Cut up to 1 MiB off the end, in 16-byte steps (0: the whole file), so that the
    // damage, if any, lies where the helper has been at work, and the file stays above the
    // helper's threshold.
    let cut = usize::from(u16::from_le_bytes([cut[0], cut[1]])) * 16;
    let reps = (MIN_FILE - HEADER).div_ceil(body.len());
    let mut bytes = Vec::with_capacity(HEADER + reps * body.len());
    bytes.extend_from_slice(head);
    for _ in 0..reps {
        bytes.extend_from_slice(body);
    }
    bytes.truncate(bytes.len() - cut);
    let path = scratch_file();
    let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(&bytes));
    if written.is_err() {
        return;
    }
    let mapped = digest(CaptureReader::open_with_buffer(&Input::File(path.clone()), INITIAL, MAX).ok());
    let _ = std::fs::remove_file(&path);
    let streamed = digest(
        CaptureReader::from_reader_with_buffer(
            "fuzz",
            Box::new(std::io::Cursor::new(bytes)),
            INITIAL,
            MAX,
        )
        .ok(),
    );
    assert_eq!(mapped, streamed);
});
