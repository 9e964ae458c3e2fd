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
    /// directory are sorted by path.
    pub inputs: Vec<Input>,
    /// Files below a directory that were skipped (not a capture by magic, unreadable).
    pub skipped: Vec<CaptureWarning>,
}

/// Expands command-line arguments: `-` is stdin, a file is taken as given (its format is
/// checked when it is opened), a directory stands for every capture below it, recursively,
/// sorted by path. Files below a directory whose first bytes are no pcap/pcapng/gzip magic
/// are skipped with a warning. Symbolic links to directories are not followed (no cycles).
///
/// A missing argument or an unreadable directory is an error.
pub fn expand_inputs<P: AsRef<Path>>(args: &[P]) -> Result<ExpandedInputs, CaptureError> {
    let mut out = ExpandedInputs::default();
    for arg in args {
        let arg = arg.as_ref();
        if arg == Path::new("-") {
            out.inputs.push(Input::Stdin);
            continue;
        }
        let meta = std::fs::metadata(arg).map_err(|source| io_err(arg, source))?;
        if !meta.is_dir() {
            out.inputs.push(Input::File(arg.to_path_buf()));
            continue;
        }
        let mut files = Vec::new();
        walk_dir(arg, &mut files)?;
        files.sort();
        for file in files {
            match sniff_file(&file) {
                Ok(Some(_)) => out.inputs.push(Input::File(file)),
                Ok(None) => out.skipped.push(CaptureWarning {
                    path: file,
                    byte_offset: 0,
                    message: "skipped: not a pcap, pcapng or gzip capture".into(),
                }),
                Err(e) => out.skipped.push(CaptureWarning {
                    path: file,
                    byte_offset: 0,
                    message: format!("skipped: {e}"),
                }),
            }
        }
    }
    Ok(out)
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
        source,
    }
}

/// The container format, from the first four bytes of the (decompressed) stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Magic {
    Pcap,
    PcapNg,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

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
    let mut head = [0u8; 4];
    let n = read_up_to(&mut file, &mut head)?;
    if head[..n.min(2)] == GZIP_MAGIC {
        let mut gz = MultiGzDecoder::new(Cursor::new(head[..n].to_vec()).chain(file));
        let mut inner = [0u8; 4];
        // A damaged gzip stream is not a capture we can read: skip it like any other.
        let m = read_up_to(&mut gz, &mut inner).unwrap_or(0);
        return Ok(classify(&inner[..m]));
    }
    Ok(classify(&head[..n]))
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
    let gzip = head[..head.len().min(2)] == GZIP_MAGIC;
    let head = if gzip {
        stream = Box::new(MultiGzDecoder::new(stream));
        let (inner_head, inner) = peek(stream, &path)?;
        stream = inner;
        inner_head
    } else {
        head
    };
    if head.is_empty() {
        return Err(CaptureError::Empty { path });
    }
    let magic = classify(&head).ok_or_else(|| CaptureError::NotACapture {
        path: path.clone(),
        magic: head
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" "),
    })?;
    Ok(OpenedStream {
        stream,
        magic,
        gzip,
    })
}

/// Reads up to four bytes and returns them with a stream that yields them again first.
fn peek(
    mut r: Box<dyn Read + Send>,
    path: &Path,
) -> Result<(Vec<u8>, Box<dyn Read + Send>), CaptureError> {
    let mut head = [0u8; 4];
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
    fn expand_missing_is_an_error() {
        let err = expand_inputs(&["/nonexistent/netfm/x.pcap"]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/netfm/x.pcap"));
    }
}
