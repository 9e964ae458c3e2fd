//! Capture input robustness: every conformance capture (the malformed ones included) is read
//! and decoded without panic; damaged files deliver what precedes the damage and name its
//! byte offset; gzip, big-endian, nanosecond and multi-interface pcapng inputs read the
//! same frames as their plain equivalents; unsupported link types are counted, not fatal.

use flate2::write::GzEncoder;
use flate2::Compression;
use netfm::capture::{
    expand_inputs, CaptureError, CaptureFormat, CaptureReader, CaptureWarning, Input,
};
use netfm::decode::{decode_frame, DecodeOptions, SkipReason};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

mod common;
use common::conformance_dir;

fn conformance_pcap(name: &str) -> PathBuf {
    conformance_dir().join("pcaps").join(name)
}

/// A frame copied out of the reader.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OwnedFrame {
    ts_ns: u64,
    linktype: u32,
    orig_len: u32,
    data: Vec<u8>,
}

fn drain(mut reader: CaptureReader) -> (Vec<OwnedFrame>, Option<CaptureWarning>) {
    let mut frames = Vec::new();
    while let Some(f) = reader.next_frame() {
        frames.push(OwnedFrame {
            ts_ns: f.ts_ns,
            linktype: f.linktype,
            orig_len: f.orig_len,
            data: f.data.to_vec(),
        });
    }
    (frames, reader.warning().cloned())
}

fn read_file(path: &Path) -> (Vec<OwnedFrame>, Option<CaptureWarning>) {
    let reader = CaptureReader::open(&Input::File(path.to_path_buf()))
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    drain(reader)
}

fn read_bytes(bytes: Vec<u8>) -> (Vec<OwnedFrame>, Option<CaptureWarning>) {
    let reader = CaptureReader::from_reader("mem", Box::new(std::io::Cursor::new(bytes)))
        .expect("open in-memory capture");
    drain(reader)
}

fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write temp capture");
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// Offsets of the records of a little-endian classic pcap (after the 24-byte header).
fn record_offsets(pcap: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        offsets.push(at);
        let caplen =
            u32::from_le_bytes(pcap[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
        at += 16 + caplen;
    }
    offsets
}

#[test]
fn every_conformance_capture_reads_and_decodes_without_panic() {
    let dir = conformance_dir().join("pcaps");
    let expanded = expand_inputs(&[&dir]).expect("list conformance captures");
    assert!(expanded.skipped.is_empty(), "{:?}", expanded.skipped);
    assert_eq!(expanded.inputs.len(), 51);
    let mut warnings = BTreeMap::new();
    let mut frames = 0usize;
    for input in &expanded.inputs {
        let mut reader = CaptureReader::open(input).unwrap_or_else(|e| panic!("{e}"));
        while let Some(frame) = reader.next_frame() {
            frames += 1;
            let _ = decode_frame(&frame, &DecodeOptions::INNER);
            // Every shorter capture length of every frame must decode (or skip) too.
            for n in 0..frame.data.len() {
                for opts in [DecodeOptions::INNER, DecodeOptions::NETFOUND] {
                    let _ = netfm::decode::decode(
                        frame.linktype,
                        &frame.data[..n],
                        frame.ts_ns,
                        frame.orig_len,
                        &opts,
                    );
                }
            }
        }
        if let Some(w) = reader.warning() {
            warnings.insert(
                w.path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
                w.clone(),
            );
        }
    }
    assert_eq!(frames, 2705);
    // Only the capture cut in the middle of a packet is damaged: its 7th record starts at
    // byte 2120 and is incomplete.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let cut = &warnings["malformed_derived_http_get_cut_at_3000.pcap"];
    assert_eq!(cut.byte_offset, 2120);
    assert!(cut.message.contains("truncated"), "{}", cut.message);
}

#[test]
fn special_variants_of_the_conformance_set() {
    // Kuznetzov "modified" pcap: read through pcap-parser's variant parser.
    let (frames, warning) = read_file(&conformance_pcap(
        "malformed_pcapparser_modified_format.pcap",
    ));
    assert_eq!((frames.len(), warning), (1, None));
    // A version 2.5 header (libpcap refuses it, Wireshark reads it): read.
    let (frames, warning) = read_file(&conformance_pcap(
        "malformed_libpcap_invalid_version_2.pcap",
    ));
    assert_eq!((frames.len(), warning), (1, None));
    // Big-endian pcapng section.
    let reader = CaptureReader::open(&Input::File(conformance_pcap(
        "pcapparser_test001_be.pcapng",
    )))
    .expect("open");
    assert_eq!(reader.format(), CaptureFormat::PcapNg);
    let (frames, warning) = drain(reader);
    assert_eq!((frames.len(), warning), (4, None));
    assert!(frames
        .iter()
        .all(|f| f.linktype == 1 && f.data.len() >= 314));
    // FCS bits in the link type field (0x30000001): the link type is Ethernet.
    let (frames, _) = read_file(&conformance_pcap(
        "malformed_tcpdump_bad_ipv4_version_pgm.pcap",
    ));
    assert_eq!(frames[0].linktype, 1);
}

#[test]
fn a_cut_capture_delivers_every_complete_record_and_names_the_offset() {
    let full = std::fs::read(conformance_pcap("zeek_http_get.pcap")).expect("read");
    let offsets = record_offsets(&full);
    assert_eq!(offsets.len(), 14);
    let (all, warning) = read_bytes(full.clone());
    assert_eq!((all.len(), warning), (14, None));
    let tmp = tempfile::tempdir().expect("tempdir");
    // Cuts: inside a record header, right after it, inside the data, one byte short of the
    // end, and exactly at record boundaries (which is not damage).
    let mut cuts = Vec::new();
    for (i, &start) in offsets.iter().enumerate().skip(1) {
        cuts.extend([start + 1, start + 15, start + 16, start + 40]);
        if i == offsets.len() - 1 {
            cuts.push(full.len() - 1);
        }
    }
    for cut in cuts.into_iter().filter(|&c| c < full.len()) {
        let path = write_temp(tmp.path(), &format!("cut_{cut}.pcap"), &full[..cut]);
        let (frames, warning) = read_file(&path);
        let complete = offsets.iter().filter(|&&o| o < cut).count() - 1;
        assert_eq!(frames, all[..complete], "cut at {cut}");
        let warning = warning.unwrap_or_else(|| panic!("no warning for a cut at {cut}"));
        assert_eq!(warning.path, path);
        assert_eq!(
            warning.byte_offset, offsets[complete] as u64,
            "cut at {cut}"
        );
        assert!(
            warning
                .to_string()
                .contains(&format!("at byte {}", offsets[complete])),
            "{warning}"
        );
    }
    for &boundary in &offsets[1..] {
        let (frames, warning) = read_bytes(full[..boundary].to_vec());
        assert_eq!(warning, None, "cut at record boundary {boundary}");
        assert_eq!(frames, all[..frames.len()]);
    }
    // Cut inside the file header: that is an open error naming the file.
    let path = write_temp(tmp.path(), "header_only.pcap", &full[..10]);
    let err = CaptureReader::open(&Input::File(path.clone()))
        .err()
        .expect("must fail");
    assert!(matches!(err, CaptureError::BadHeader { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn a_cut_pcapng_names_the_block_offset() {
    let full = std::fs::read(conformance_pcap("zeek_tcp_missing_syn.pcapng")).expect("read");
    let (all, warning) = read_bytes(full.clone());
    assert_eq!((all.len(), warning), (13, None));
    let (frames, warning) = read_bytes(full[..full.len() - 7].to_vec());
    assert_eq!(frames, all[..12]);
    let warning = warning.expect("warning");
    assert!(
        warning.message.contains("pcapng block"),
        "{}",
        warning.message
    );
    // The last block is the 13th packet: the warning points at its start.
    let last_len = u32::from_le_bytes(full[full.len() - 4..].try_into().expect("4 bytes")) as usize;
    assert_eq!(warning.byte_offset, (full.len() - last_len) as u64);
}

#[test]
fn corrupt_record_lengths_end_the_file_with_a_warning() {
    let full = std::fs::read(conformance_pcap("zeek_http_get.pcap")).expect("read");
    let offsets = record_offsets(&full);
    let mut bad = full.clone();
    // Record 5 claims 2 GiB of data.
    bad[offsets[4] + 8..offsets[4] + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let (frames, warning) = read_bytes(bad);
    assert_eq!(frames.len(), 4);
    let warning = warning.expect("warning");
    assert_eq!(warning.byte_offset, offsets[4] as u64);
    assert!(warning.message.contains("corrupt"), "{}", warning.message);

    // A pcapng block whose trailing length disagrees with its leading one.
    let mut ng =
        std::fs::read(conformance_pcap("zeek_tcp_retransmit_timeout.pcapng")).expect("read");
    let last_len = u32::from_le_bytes(ng[ng.len() - 4..].try_into().expect("4 bytes")) as usize;
    let n = ng.len();
    ng[n - 4..].copy_from_slice(&((last_len + 4) as u32).to_le_bytes());
    let (frames, warning) = read_bytes(ng);
    assert_eq!(frames.len(), 2);
    assert_eq!(warning.expect("warning").byte_offset, (n - last_len) as u64);

    // A pcapng block claiming fewer than 12 bytes (here a process information block of 8,
    // on which pcap-parser 0.17's length arithmetic overflows; found by the fuzzer) ends the
    // file with a warning at that block, whatever came before it.
    let mut ng =
        std::fs::read(conformance_pcap("zeek_tcp_retransmit_timeout.pcapng")).expect("read");
    let (before, _) = read_bytes(ng.clone());
    let at = ng.len();
    ng.extend_from_slice(&0x8000_0001u32.to_le_bytes());
    ng.extend_from_slice(&8u32.to_le_bytes());
    ng.extend_from_slice(&[0; 8]);
    let (frames, warning) = read_bytes(ng);
    assert_eq!(frames.len(), before.len());
    let warning = warning.expect("warning");
    assert_eq!(warning.byte_offset, at as u64);
    assert!(
        warning.message.contains("block length 8"),
        "{}",
        warning.message
    );
}

#[test]
fn a_block_larger_than_the_buffer_grows_it_up_to_the_cap() {
    let full = std::fs::read(conformance_pcap("zeek_http_m57_long.pcap")).expect("read");
    let (all, _) = read_bytes(full.clone());
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = write_temp(tmp.path(), "m57.pcap", &full);
    // 64-byte initial buffer, 1514-byte frames: grows, same frames.
    let reader =
        CaptureReader::open_with_buffer(&Input::File(path.clone()), 64, 1 << 20).expect("open");
    let (frames, warning) = drain(reader);
    assert_eq!((frames.len(), warning), (all.len(), None));
    assert_eq!(frames, all);
    // Capped below the largest record: the file ends there with a warning.
    let reader = CaptureReader::open_with_buffer(&Input::File(path), 64, 512).expect("open");
    let (frames, warning) = drain(reader);
    assert!(frames.len() < all.len());
    assert_eq!(frames, all[..frames.len()]);
    assert!(warning.expect("warning").message.contains("limit"));
}

#[test]
fn gzip_reads_the_same_frames_as_plain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for name in [
        "zeek_wikipedia.pcap",
        "zeek_vlan_pcp_dei.pcapng",
        "tcpdump_bgp_role_sll.pcapng",
    ] {
        let plain = std::fs::read(conformance_pcap(name)).expect("read");
        let (want, _) = read_bytes(plain.clone());
        // Named .gz, and also detected by magic under a misleading name.
        for file in [format!("{name}.gz"), format!("{name}.bin")] {
            let path = write_temp(tmp.path(), &file, &gzip(&plain));
            let reader = CaptureReader::open(&Input::File(path)).expect("open gzip");
            assert!(reader.is_gzip());
            let (got, warning) = drain(reader);
            assert_eq!(warning, None);
            assert_eq!(got, want, "{file}");
        }
    }
    // A cut gzip stream: the frames before the cut, then a read warning.
    let plain = std::fs::read(conformance_pcap("zeek_http_m57_long.pcap")).expect("read");
    let (want, _) = read_bytes(plain.clone());
    let gz = gzip(&plain);
    let (got, warning) = read_bytes(gz[..gz.len() / 2].to_vec());
    assert!(!got.is_empty() && got.len() < want.len());
    assert_eq!(got, want[..got.len()]);
    assert!(warning.is_some());
}

/// A reader that hands out one byte at a time, like a slow pipe.
struct Trickle(std::io::Cursor<Vec<u8>>);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn short_reads_from_a_pipe_are_handled() {
    for name in ["zeek_http_get.pcap", "zeek_tcp_missing_syn.pcapng"] {
        let plain = std::fs::read(conformance_pcap(name)).expect("read");
        let (want, _) = read_bytes(plain.clone());
        for bytes in [plain.clone(), gzip(&plain)] {
            // A small buffer, so that most reads happen after the header.
            let trickle = Box::new(Trickle(std::io::Cursor::new(bytes)));
            let reader =
                CaptureReader::from_reader_with_buffer("-", trickle, 256, 1 << 20).expect("open");
            let (got, warning) = drain(reader);
            assert_eq!((got.len(), warning), (want.len(), None));
            assert_eq!(got, want);
        }
    }
}

/// Rewrites a little-endian classic pcap as big-endian, optionally with nanosecond magic.
fn to_big_endian(le: &[u8], nanos: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(le.len());
    let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    out.extend_from_slice(&magic.to_be_bytes());
    for field in [4..6, 6..8] {
        out.extend(le[field].iter().rev());
    }
    for field in [8..12, 12..16, 16..20, 20..24] {
        out.extend(le[field].iter().rev());
    }
    let mut at = 24;
    while at + 16 <= le.len() {
        let word =
            |i: usize| u32::from_le_bytes(le[at + i..at + i + 4].try_into().expect("4 bytes"));
        let frac = if nanos { word(4) * 1000 } else { word(4) };
        for v in [word(0), frac, word(8), word(12)] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        let caplen = word(8) as usize;
        out.extend_from_slice(&le[at + 16..at + 16 + caplen]);
        at += 16 + caplen;
    }
    out
}

#[test]
fn big_endian_and_nanosecond_classic_pcap_read_the_same_frames() {
    let le = std::fs::read(conformance_pcap("zeek_tcp_options.pcap")).expect("read");
    let (want, _) = read_bytes(le.clone());
    for nanos in [false, true] {
        let reader = CaptureReader::from_reader(
            "be",
            Box::new(std::io::Cursor::new(to_big_endian(&le, nanos))),
        )
        .expect("open big-endian");
        assert_eq!(
            reader.format(),
            CaptureFormat::Pcap {
                big_endian: true,
                nanosecond: nanos,
                modified: false
            }
        );
        let (got, warning) = drain(reader);
        assert_eq!(warning, None);
        assert_eq!(got, want, "nanosecond = {nanos}");
    }
}

/// pcapng blocks in either byte order.
struct NgWriter {
    big_endian: bool,
    out: Vec<u8>,
}

impl NgWriter {
    fn u16(&self, v: u16) -> [u8; 2] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn u32(&self, v: u32) -> [u8; 4] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn block(&mut self, block_type: u32, body: &[u8]) {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let total = (body.len() + 12) as u32;
        let head = [self.u32(block_type), self.u32(total)].concat();
        self.out.extend_from_slice(&head);
        self.out.extend_from_slice(&body);
        self.out.extend_from_slice(&self.u32(total));
    }

    fn option(&self, code: u16, value: &[u8]) -> Vec<u8> {
        let mut o = [self.u16(code), self.u16(value.len() as u16)].concat();
        o.extend_from_slice(value);
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
        o
    }

    fn section(&mut self) {
        let mut body = self.u32(0x1a2b_3c4d).to_vec();
        body.extend_from_slice(&[self.u16(1), self.u16(0)].concat());
        body.extend_from_slice(&(-1i64).to_le_bytes());
        self.block(0x0a0d_0d0a, &body);
    }

    fn interface(&mut self, linktype: u16, tsresol: Option<u8>, tsoffset: Option<i64>) {
        let mut body = [self.u16(linktype), self.u16(0)].concat();
        body.extend_from_slice(&self.u32(0)); // snaplen: none
        if let Some(r) = tsresol {
            body.extend(self.option(9, &[r]));
        }
        if let Some(off) = tsoffset {
            let v = if self.big_endian {
                off.to_be_bytes()
            } else {
                off.to_le_bytes()
            };
            body.extend(self.option(14, &v));
        }
        if tsresol.is_some() || tsoffset.is_some() {
            body.extend(self.option(0, &[]));
        }
        self.block(1, &body);
    }

    fn packet(&mut self, if_id: u32, ts_units: u64, data: &[u8]) {
        let mut body = [
            self.u32(if_id),
            self.u32((ts_units >> 32) as u32),
            self.u32(ts_units as u32),
            self.u32(data.len() as u32),
            self.u32(data.len() as u32),
        ]
        .concat();
        body.extend_from_slice(data);
        self.block(6, &body);
    }
}

#[test]
fn pcapng_interfaces_sections_and_timestamp_resolutions() {
    let ipv4_udp = {
        let mut p = vec![
            0x45, 0, 0, 29, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 9, 0, 0, 0xab]);
        p
    };
    let mut ether = vec![0u8; 12];
    ether.extend_from_slice(&[0x08, 0x00]);
    ether.extend_from_slice(&ipv4_udp);

    let mut w = NgWriter {
        big_endian: false,
        out: Vec::new(),
    };
    w.section();
    w.interface(1, Some(9), None); // Ethernet, nanoseconds
    w.interface(101, Some(0x80 | 20), Some(100)); // raw IP, 2^-20 s, +100 s
    w.interface(147, None, None); // unsupported link type, default microseconds
    w.packet(0, 1_700_000_000_123_456_789, &ether);
    w.packet(1, (5u64 << 20) | (1 << 19), &ipv4_udp); // 5.5 s in 2^-20 units
    w.packet(2, 3_000_001, &ipv4_udp);
    w.packet(7, 1, &ipv4_udp); // undefined interface: skipped, counted
                               // A second, big-endian section restarts interface numbering.
    let mut be = NgWriter {
        big_endian: true,
        out: Vec::new(),
    };
    be.section();
    be.interface(228, Some(3), Some(-1)); // IPv4, milliseconds, -1 s
    be.packet(0, 2_500, &ipv4_udp);
    w.out.extend_from_slice(&be.out);

    let mut reader =
        CaptureReader::from_reader("ng", Box::new(std::io::Cursor::new(w.out))).expect("open");
    let mut got = Vec::new();
    let mut skipped = BTreeMap::new();
    while let Some(f) = reader.next_frame() {
        got.push((f.linktype, f.ts_ns));
        if let Err(reason) = decode_frame(&f, &DecodeOptions::INNER) {
            *skipped.entry(reason).or_insert(0) += 1;
        }
    }
    assert_eq!(reader.warning(), None);
    assert_eq!(reader.stats().unknown_interface_frames, 1);
    assert_eq!(
        got,
        vec![
            (1, 1_700_000_000_123_456_789),
            (101, 105_500_000_000),
            (147, 3_000_001_000),
            (228, 1_500_000_000),
        ]
    );
    assert_eq!(
        skipped,
        BTreeMap::from([(SkipReason::UnsupportedLinkType, 1)])
    );
}

#[test]
fn unsupported_link_types_are_counted_not_fatal() {
    let mut pcap = std::fs::read(conformance_pcap("zeek_http_get.pcap")).expect("read");
    pcap[20..24].copy_from_slice(&147u32.to_le_bytes()); // LINKTYPE_USER0
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = write_temp(tmp.path(), "user0.pcap", &pcap);
    let mut reader = CaptureReader::open(&Input::File(path)).expect("open");
    let mut unsupported = 0;
    while let Some(f) = reader.next_frame() {
        assert_eq!(f.linktype, 147);
        if decode_frame(&f, &DecodeOptions::INNER) == Err(SkipReason::UnsupportedLinkType) {
            unsupported += 1;
        }
    }
    assert_eq!((unsupported, reader.warning()), (14, None));
}

#[test]
fn directories_expand_recursively_in_path_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    std::fs::create_dir_all(root.join("b/c")).expect("mkdir");
    let pcap = std::fs::read(conformance_pcap("zeek_tcp_syn_then_rst.pcap")).expect("read");
    write_temp(root, "z.pcap", &pcap);
    write_temp(&root.join("b"), "a.pcap.gz", &gzip(&pcap));
    write_temp(&root.join("b/c"), "readme.txt", b"not a capture");
    write_temp(
        &root.join("b/c"),
        "x.pcapng",
        &std::fs::read(conformance_pcap("zeek_tcp_retransmit_timeout.pcapng")).expect("read"),
    );
    let ex = expand_inputs(&[root]).expect("expand");
    let names: Vec<String> = ex
        .inputs
        .iter()
        .map(|i| {
            i.path()
                .strip_prefix(root)
                .expect("below root")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(names, vec!["b/a.pcap.gz", "b/c/x.pcapng", "z.pcap"]);
    assert_eq!(ex.skipped.len(), 1);
    assert!(ex.skipped[0].path.ends_with("b/c/readme.txt"));
    // "-" is stdin; files are kept in command-line order.
    let ex = expand_inputs(&[root.join("z.pcap"), PathBuf::from("-")]).expect("expand");
    assert_eq!(
        ex.inputs,
        vec![Input::File(root.join("z.pcap")), Input::Stdin]
    );
}

#[test]
fn open_errors_name_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = write_temp(tmp.path(), "empty.pcap", b"");
    let text = write_temp(tmp.path(), "notes.pcap", b"hello world");
    let missing = tmp.path().join("missing.pcap");
    for (path, check) in [
        (
            &empty,
            (|e: &CaptureError| matches!(e, CaptureError::Empty { .. }))
                as fn(&CaptureError) -> bool,
        ),
        (&text, |e| matches!(e, CaptureError::NotACapture { .. })),
        (&missing, |e| matches!(e, CaptureError::Io { .. })),
    ] {
        let err = CaptureReader::open(&Input::File(path.clone()))
            .err()
            .expect("must fail");
        assert!(check(&err), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    assert!(expand_inputs(&[&missing]).is_err());
}

/// Inputs on which the fuzzer once found a crash (tests/data/fuzz-regressions): each goes
/// through the reader and the decoder under every link type, as the fuzz target does.
#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("regression folder") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        if let Ok(mut reader) = netfm::capture::CaptureReader::from_reader(
            "regression",
            Box::new(std::io::Cursor::new(bytes.clone())),
        ) {
            while let Some(frame) = reader.next_frame() {
                let _ = netfm::decode::decode_frame(&frame, &DecodeOptions::INNER);
            }
        }
        for lt in [0u32, 1, 9, 50, 101, 104, 108, 113, 228, 229, 276] {
            for opts in [DecodeOptions::INNER, DecodeOptions::NETFOUND] {
                let _ = netfm::decode::decode(lt, &bytes, 0, bytes.len() as u32, &opts);
            }
        }
        n += 1;
    }
    assert!(n > 0, "no regression inputs found in {}", dir.display());
}

/// Plain classic pcap files are read through a memory map (parsed in place), everything
/// else through the streaming reader: both must deliver the same frames and the same
/// damage report for every conformance capture, and for a capture far larger than the
/// mapped reader's release window.
#[test]
fn mapped_and_streamed_reads_agree() {
    let dir = conformance_dir().join("pcaps");
    let expanded = expand_inputs(&[&dir]).expect("list conformance captures");
    let mut compared = 0;
    for input in &expanded.inputs {
        let Input::File(path) = input else { continue };
        let (mapped, mapped_warning) = read_file(path);
        let (streamed, streamed_warning) = read_bytes(std::fs::read(path).expect("read"));
        assert_eq!(mapped, streamed, "{}", path.display());
        assert_eq!(
            mapped_warning.map(|w| (w.byte_offset, w.message)),
            streamed_warning.map(|w| (w.byte_offset, w.message)),
            "{}",
            path.display()
        );
        compared += 1;
    }
    assert_eq!(compared, 51);

    // 40 MB of records (five times the release window), then a record cut short.
    let base = std::fs::read(conformance_pcap("zeek_http_m57_long.pcap")).expect("read");
    let records = &base[24..];
    let mut big = base[..24].to_vec();
    while big.len() < 40 << 20 {
        big.extend_from_slice(records);
    }
    let cut_at = big.len();
    big.extend_from_slice(&records[..10]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = write_temp(tmp.path(), "big.pcap", &big);
    let (mapped, mapped_warning) = read_file(&path);
    let (streamed, streamed_warning) = read_bytes(big);
    assert!(mapped.len() > 40_000, "{}", mapped.len());
    assert_eq!(mapped, streamed);
    let (mapped_warning, streamed_warning) = (
        mapped_warning.expect("mapped warning"),
        streamed_warning.expect("streamed warning"),
    );
    assert_eq!(mapped_warning.byte_offset, cut_at as u64);
    assert_eq!(
        (mapped_warning.byte_offset, mapped_warning.message),
        (streamed_warning.byte_offset, streamed_warning.message)
    );

    // A record claiming 2 GiB: the same "corrupt" report both ways.
    let full = std::fs::read(conformance_pcap("zeek_http_get.pcap")).expect("read");
    let offsets = record_offsets(&full);
    let mut bad = full.clone();
    bad[offsets[4] + 8..offsets[4] + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let path = write_temp(tmp.path(), "bad.pcap", &bad);
    let (frames, warning) = read_file(&path);
    let (streamed, streamed_warning) = read_bytes(bad);
    assert_eq!((frames.len(), &frames), (4, &streamed));
    let warning = warning.expect("warning");
    assert_eq!(warning.byte_offset, offsets[4] as u64);
    assert!(warning.message.contains("corrupt"), "{}", warning.message);
    assert_eq!(Some(warning.message), streamed_warning.map(|w| w.message));
}

/// A mapped capture that shrinks while it is read (another process truncating it) ends
/// with a read-error warning at the first record reaching past the new end, every record
/// before it delivered: the reader faults pages in with a call that reports the failure
/// instead of touching them and dying of SIGBUS.
#[test]
fn a_mapped_capture_truncated_while_read_ends_with_a_warning() {
    let base = std::fs::read(conformance_pcap("zeek_http_m57_long.pcap")).expect("read");
    let mut big = base[..24].to_vec();
    while big.len() < 40 << 20 {
        big.extend_from_slice(&base[24..]);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = write_temp(tmp.path(), "shrinking.pcap", &big);
    let reader = CaptureReader::open(&Input::File(path.clone())).expect("open");
    // Cut mid-record and mid-page, after the reader mapped the whole file.
    let cut = (20 << 20) + 37;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("reopen")
        .set_len(cut as u64)
        .expect("truncate");
    let (frames, warning) = drain(reader);
    let (want, want_warning) = read_bytes(big[..cut].to_vec());
    assert_eq!(frames, want);
    let (warning, want_warning) = (warning.expect("warning"), want_warning.expect("streamed"));
    assert_eq!(warning.byte_offset, want_warning.byte_offset);
    assert!(
        warning.message.contains("shrank") && warning.message.contains("read error"),
        "{}",
        warning.message
    );
}
