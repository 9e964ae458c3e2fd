//! Command-line inputs (files, directories, `-`) expanded into an ordered list of captures,
//! and the byte stream behind each one (gzip undone, magic sniffed).

use super::{CaptureError, CaptureWarning};
use flate2::read::MultiGzDecoder;
use std::fmt;
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};

/// One capture to read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Input {
    /// A pcap/pcapng stream on standard input (`-` on the command line).
    Stdin,
    /// A capture file, possibly gzip compressed.
    File(PathBuf),
}

impl Input {
    /// The name used in warnings and summaries (`-` for stdin).
    pub fn path(&self) -> PathBuf {
        match self {
            Input::Stdin => PathBuf::from("-"),
            Input::File(p) => p.clone(),
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Stdin => f.write_str("-"),
            Input::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The result of [`expand_inputs`].
#[derive(Debug, Default)]
pub struct ExpandedInputs {
    /// Captures to read, in the order given on the command line; the files found below a
    /// directory are sorted by path. Each file is listed once, however often it was named.
    pub inputs: Vec<Input>,
    /// For each of `inputs`, its label in netFound's fine-tuning layout
    /// (`<dir>/<label>/<files>`): the name of the first folder level below the directory
    /// argument it was found in, at any depth below that level. None for files named on the
    /// command line, files directly in a directory argument, and stdin.
    pub labels: Vec<Option<String>>,
    /// Files below a directory that were skipped (not a capture by magic, unreadable).
    pub skipped: Vec<CaptureWarning>,
    /// Files named more than once (directly, or also inside a directory argument): read
    /// once, at their first place.
    pub duplicates: Vec<CaptureWarning>,
    /// Files below a directory that could not be read to tell what they are.
    pub unreadable: Vec<CaptureWarning>,
}

impl ExpandedInputs {
    /// Adds `input` unless the same file (by canonical path) is listed already.
    fn push(&mut self, input: Input, label: Option<String>, seen: &mut Vec<(PathBuf, PathBuf)>) {
        if let Input::File(p) = &input {
            let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            if let Some((_, first)) = seen.iter().find(|(c, _)| *c == canon) {
                self.duplicates.push(CaptureWarning {
                    path: p.clone(),
                    byte_offset: 0,
                    message: if first == p {
                        "named more than once; read once".to_string()
                    } else {
                        format!("the same file as {}; read once", first.display())
                    },
                });
                return;
            }
            seen.push((canon, p.clone()));
        } else if self.inputs.contains(&Input::Stdin) {
            self.duplicates.push(CaptureWarning {
                path: PathBuf::from("-"),
                byte_offset: 0,
                message: "standard input named more than once; read once".to_string(),
            });
            return;
        }
        self.inputs.push(input);
        self.labels.push(label);
    }
}

/// Expands command-line arguments: `-` is stdin, a file is taken as given (its format is
/// checked when it is opened), a directory stands for every capture below it, recursively,
/// sorted by path. Files below a directory whose first bytes are no pcap/pcapng/gzip magic
/// are skipped with a warning. Symbolic links to directories are not followed (no cycles).
///
/// A missing argument or an unreadable directory is an error.
pub fn expand_inputs<P: AsRef<Path>>(args: &[P]) -> Result<ExpandedInputs, CaptureError> {
    let mut out = ExpandedInputs::default();
    let mut seen = Vec::new();
    for arg in args {
        let arg = arg.as_ref();
        if arg == Path::new("-") {
            out.push(Input::Stdin, None, &mut seen);
            continue;
        }
        let meta = std::fs::metadata(arg).map_err(|source| io_err(arg, source))?;
        if !meta.is_dir() {
            out.push(Input::File(arg.to_path_buf()), None, &mut seen);
            continue;
        }
        let mut files = Vec::new();
        walk_dir(arg, &mut files)?;
        files.sort();
        for file in files {
            match sniff_file(&file) {
                Ok(Some(_)) => {
                    let label = label_below(arg, &file);
                    out.push(Input::File(file), label, &mut seen)
                }
                Ok(None) => out.skipped.push(CaptureWarning {
                    path: file,
                    byte_offset: 0,
                    message: "skipped: not a pcap or pcapng capture (plain, gzip, zstd or xz)"
                        .into(),
                }),
                Err(e) => out.unreadable.push(CaptureWarning {
                    path: file,
                    byte_offset: 0,
                    message: format!("could not be read: {e}"),
                }),
            }
        }
    }
    Ok(out)
}

/// The first folder level below `root` on the way to `file` (None if `file` lies directly
/// in `root`).
fn label_below(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let mut parts = rel.components();
    let first = parts.next()?;
    // A file directly in the root has no folder level below it.
    parts.next()?;
    Some(first.as_os_str().to_string_lossy().into_owned())
}

fn walk_dir(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), CaptureError> {
    let entries = std::fs::read_dir(dir).map_err(|source| io_err(dir, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| io_err(dir, source))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|source| io_err(&path, source))?;
        if file_type.is_dir() {
            walk_dir(&path, files)?;
        } else if file_type.is_file() {
            files.push(path);
        } else if file_type.is_symlink() {
            // Follow links to files only: a link to a directory could make a cycle.
            if std::fs::metadata(&path)
                .map(|m| m.is_file())
                .unwrap_or(false)
            {
                files.push(path);
            }
        }
    }
    Ok(())
}

pub(crate) fn io_err(path: &Path, source: io::Error) -> CaptureError {
    CaptureError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

/// The container format, from the first four bytes of the (decompressed) stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Magic {
    Pcap,
    PcapNg,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];
/// Bytes read to recognise a format.
const HEAD: usize = 8;
/// The most memory the xz decoder may take (its dictionary is sized by the file's
/// header; a hostile header must not make the reader allocate gigabytes).
const XZ_MEMORY_LIMIT: u64 = 512 << 20;

/// How a capture's bytes are compressed, from their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    fn of(head: &[u8]) -> Compression {
        if head.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else if head.starts_with(&XZ_MAGIC) {
            Compression::Xz
        } else {
            Compression::None
        }
    }

    /// The decompressed stream of `r` (which starts with this compression's magic).
    fn decoder(
        self,
        r: Box<dyn Read + Send>,
        path: &Path,
    ) -> Result<Box<dyn Read + Send>, CaptureError> {
        Ok(match self {
            Compression::None => r,
            Compression::Gzip => Box::new(MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(r).map_err(|source| io_err(path, source))?,
            ),
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMORY_LIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(|e| io_err(path, io::Error::other(e)))?;
                Box::new(liblzma::read::XzDecoder::new_stream(r, stream))
            }
        })
    }
}

/// What a file that is no capture seems to be, from its first bytes, for the error message.
fn what_else(head: &[u8]) -> Option<&'static str> {
    let known: [(&[u8], &str); 8] = [
        (
            b"BZh",
            "a bzip2-compressed file (not read: decompress it first, e.g. `bunzip2`)",
        ),
        (
            &[0x04, 0x22, 0x4d, 0x18],
            "an lz4-compressed file (not read: decompress it first, e.g. `lz4 -d`)",
        ),
        (b"PK\x03\x04", "a zip archive (not read: unpack it first)"),
        (
            &[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c],
            "a 7-zip archive (not read: unpack it first)",
        ),
        (
            b"snoop\0\0\0",
            "a Solaris snoop capture (not read: convert it, e.g. `editcap -F pcap`)",
        ),
        (
            b"\x00\x00\x00\x00\x01\x00\x00\x00",
            "possibly an ERF or raw dump (not a pcap or pcapng capture)",
        ),
        (
            b"ARROW1",
            "an Arrow IPC file (netfm reads captures; datasets are read by the model jobs)",
        ),
        (
            b"PAR1",
            "a Parquet file (netfm reads captures; datasets are read by the model jobs)",
        ),
    ];
    for (magic, name) in known {
        if head.starts_with(magic) {
            return Some(name);
        }
    }
    if !head.is_empty()
        && head
            .iter()
            .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Some("text, not a capture");
    }
    None
}

pub(crate) fn classify(magic: &[u8]) -> Option<Magic> {
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => Some(Magic::PcapNg),
        // Classic pcap magics as stored: LE/BE microsecond, LE/BE nanosecond, and the
        // little-endian Kuznetzov "modified" format (pcap-parser reads no big-endian one).
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d]
        | [0x34, 0xcd, 0xb2, 0xa1] => Some(Magic::Pcap),
        _ => None,
    }
}

/// Reads until `buf` is full or the stream ends; returns the number of bytes read.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether a file below a directory is worth opening: its (decompressed) magic.
fn sniff_file(path: &Path) -> io::Result<Option<Magic>> {
    let mut file = File::open(path)?;
    let mut head = [0u8; HEAD];
    let n = read_up_to(&mut file, &mut head)?;
    let compression = Compression::of(&head[..n]);
    if compression == Compression::None {
        return Ok(classify(&head[..n.min(4)]));
    }
    let raw: Box<dyn Read + Send> = Box::new(Cursor::new(head[..n].to_vec()).chain(file));
    // A damaged compressed stream is not a capture we can read: skip it like any other.
    let Ok(mut inner) = compression.decoder(raw, path) else {
        return Ok(None);
    };
    let mut magic = [0u8; 4];
    let m = read_up_to(&mut inner, &mut magic).unwrap_or(0);
    Ok(classify(&magic[..m]))
}

/// An opened input: the decompressed byte stream positioned at its first byte.
pub(crate) struct OpenedStream {
    pub stream: Box<dyn Read + Send>,
    pub magic: Magic,
    pub gzip: bool,
}

/// Undoes gzip if the stream starts with its magic, and checks the capture magic; `path`
/// names the input in errors. The bytes read to sniff are put back in front of the stream.
pub(crate) fn sniff_stream(
    raw: Box<dyn Read + Send>,
    path: &Path,
) -> Result<OpenedStream, CaptureError> {
    let path = path.to_path_buf();
    let (head, mut stream) = peek(raw, &path)?;
    let compression = Compression::of(&head);
    let head = if compression == Compression::None {
        head
    } else {
        stream = compression.decoder(stream, &path)?;
        let (inner_head, inner) = peek(stream, &path)?;
        stream = inner;
        inner_head
    };
    if head.is_empty() {
        return Err(CaptureError::Empty { path });
    }
    let magic = classify(&head[..head.len().min(4)]).ok_or_else(|| CaptureError::NotACapture {
        path: path.clone(),
        what: match what_else(&head) {
            Some(what) => what.to_string(),
            None => format!(
                "not a pcap or pcapng capture (first bytes {})",
                head.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        },
    })?;
    Ok(OpenedStream {
        stream,
        magic,
        gzip: compression == Compression::Gzip,
    })
}

/// Reads up to [`HEAD`] bytes and returns them with a stream that yields them again first.
fn peek(
    mut r: Box<dyn Read + Send>,
    path: &Path,
) -> Result<(Vec<u8>, Box<dyn Read + Send>), CaptureError> {
    let mut head = [0u8; HEAD];
    let n = read_up_to(&mut r, &mut head).map_err(|source| io_err(path, source))?;
    let head = head[..n].to_vec();
    let stream = Box::new(Cursor::new(head.clone()).chain(r));
    Ok((head, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_known_magics() {
        assert_eq!(classify(&[0xd4, 0xc3, 0xb2, 0xa1]), Some(Magic::Pcap));
        assert_eq!(classify(&[0xa1, 0xb2, 0x3c, 0x4d]), Some(Magic::Pcap));
        assert_eq!(classify(&[0x0a, 0x0d, 0x0d, 0x0a]), Some(Magic::PcapNg));
        assert_eq!(classify(&[0x1f, 0x8b, 0x08, 0x00]), None);
        assert_eq!(classify(&[0xd4, 0xc3]), None);
    }

    #[test]
    fn expand_sorts_and_skips_non_captures() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("b");
        std::fs::create_dir(&sub).unwrap();
        let header = [
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0,
            0,
        ];
        std::fs::write(sub.join("z.pcap"), header).unwrap();
        std::fs::write(dir.path().join("a.pcap"), header).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
        let ex = expand_inputs(&[dir.path()]).unwrap();
        assert_eq!(
            ex.inputs,
            vec![
                Input::File(dir.path().join("a.pcap")),
                Input::File(sub.join("z.pcap"))
            ]
        );
        assert_eq!(ex.skipped.len(), 1);
        assert_eq!(ex.skipped[0].path, dir.path().join("notes.txt"));
    }

    #[test]
    fn each_file_is_read_once_and_labels_come_from_the_first_level() {
        let dir = tempfile::tempdir().unwrap();
        let header = [
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0,
            0,
        ];
        let deep = dir.path().join("malware/2024/q1");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("x.pcap"), header).unwrap();
        std::fs::write(dir.path().join("top.pcap"), header).unwrap();
        let x = deep.join("x.pcap");
        let ex = expand_inputs(&[x.clone(), x.clone(), dir.path().to_path_buf()]).unwrap();
        assert_eq!(
            ex.inputs,
            vec![
                Input::File(x.clone()),
                Input::File(dir.path().join("top.pcap"))
            ]
        );
        // Named on the command line: no folder level below an input directory.
        assert_eq!(ex.labels, vec![None, None]);
        assert_eq!(ex.duplicates.len(), 2, "{:?}", ex.duplicates);
        assert!(ex.duplicates[0].message.contains("named more than once"));
        // Found again inside the directory, under the same path.
        assert!(ex.duplicates[1].message.contains("read once"));
        let ex = expand_inputs(&[dir.path()]).unwrap();
        assert_eq!(ex.labels, vec![Some("malware".to_string()), None]);
        let ex = expand_inputs(&[dir.path().join("malware")]).unwrap();
        assert_eq!(ex.labels, vec![Some("2024".to_string())]);
        // Under another path (through a link): named as the same file.
        std::os::unix::fs::symlink(&x, dir.path().join("link.pcap")).unwrap();
        let ex = expand_inputs(&[x.clone(), dir.path().join("link.pcap")]).unwrap();
        assert_eq!(ex.inputs.len(), 1);
        assert!(ex.duplicates[0].message.contains("the same file as"));
    }

    #[test]
    fn expand_missing_is_an_error() {
        let err = expand_inputs(&["/nonexistent/netfm/x.pcap"]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/netfm/x.pcap"));
    }
}
