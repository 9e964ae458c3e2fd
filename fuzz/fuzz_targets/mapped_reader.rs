//! Differential: arbitrary bytes written to a file and read through the memory-mapped
//! classic pcap reader (`CaptureReader::open` on a plain file) must give the same frames,
//! and damage at the same byte offset, as the streaming reader on the same bytes, with the
//! same buffer limits. Any panic or difference is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netfm::capture::{CaptureReader, Input};
use std::path::PathBuf;

const INITIAL: usize = 256;
const MAX: usize = 1 << 16;

type Frames = Vec<(u64, u32, u32, Vec<u8>)>;

fn drain(reader: Option<CaptureReader>) -> Option<(Frames, Option<u64>)> {
    let mut reader = reader?;
    let mut frames = Vec::new();
    while let Some(f) = reader.next_frame() {
        frames.push((f.ts_ns, f.linktype, f.orig_len, f.data.to_vec()));
    }
    Some((frames, reader.warning().map(|w| w.byte_offset)))
}

fn scratch_file() -> PathBuf {
    std::env::temp_dir().join(format!("netfm-fuzz-mapped-{}.pcap", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_file();
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let mapped = drain(CaptureReader::open_with_buffer(&Input::File(path), INITIAL, MAX).ok());
    let streamed = drain(
        CaptureReader::from_reader_with_buffer(
            "fuzz",
            Box::new(std::io::Cursor::new(data.to_vec())),
            INITIAL,
            MAX,
        )
        .ok(),
    );
    assert_eq!(mapped, streamed);
});
