//! Finding, obtaining and loading the ONNX Runtime shared library (`libonnxruntime.so.1.31.1`).
//!
//! netfm links ONNX Runtime at run time (`ort`'s `load-dynamic`), because `ort`'s own binary
//! download reaches a host that air-gapped machines cannot. The library is looked for, in
//! order: `--ort-lib`, `ORT_DYLIB_PATH`, the cache (`$NETFM_ORT_DIR`, else
//! `$XDG_CACHE_HOME/netfm/onnxruntime-1.31.1/`, else `~/.cache/netfm/onnxruntime-1.31.1/`).
//! When none is there, the pinned PyPI wheel `onnxruntime==1.31.1` is fetched with pip, its
//! sha256 checked, and the library unpacked into the cache under a temporary name and renamed
//! into place, so processes racing on a first run all end up with a complete file.
//!
//! This module must never let `ort` touch a library before its version has been checked:
//! `ort` keeps the first library it loads for the life of the process, and panics on some
//! loading failures that we turn into errors here.

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::ffi::CStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// The ONNX Runtime release netfm is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";

/// The library's file name, as it appears in the wheel (`onnxruntime/capi/`) and in the cache.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";

/// How to fix any failure to obtain the library; appended to every such error.
const FIX: &str = "set ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.31.1 or pass --ort-lib PATH \
     (the file is onnxruntime/capi/libonnxruntime.so.1.31.1 inside the onnxruntime==1.31.1 wheel from PyPI)";

/// A wheel whose bytes are pinned by sha256. `--python-version` and `--platform` are pinned
/// too, so pip picks the same file whatever Python the machine has.
struct PinnedWheel {
    arch: &'static str,
    platform: &'static str,
    sha256: &'static str,
}

const WHEELS: &[PinnedWheel] = &[
    PinnedWheel {
        arch: "x86_64",
        platform: "manylinux_2_28_x86_64",
        sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
    },
    PinnedWheel {
        arch: "aarch64",
        platform: "manylinux_2_28_aarch64",
        sha256: "da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3",
    },
];

/// The Python version whose wheel is fetched (the library inside does not depend on it).
const WHEEL_PYTHON: &str = "3.11";

/// Where the library in use was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibrarySource {
    /// `--ort-lib PATH`.
    Flag,
    /// The `ORT_DYLIB_PATH` environment variable.
    Env,
    /// A copy unpacked into the cache by an earlier run.
    Cache,
    /// Fetched from PyPI by this run and unpacked into the cache.
    Downloaded,
}

impl fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LibrarySource::Flag => "--ort-lib",
            LibrarySource::Env => "ORT_DYLIB_PATH",
            LibrarySource::Cache => "cache",
            LibrarySource::Downloaded => {
                "downloaded now: PyPI wheel onnxruntime==1.31.1, sha256 checked"
            }
        })
    }
}

/// ONNX Runtime as loaded into this process: the library and the `ort` environment that
/// every session is created under.
#[derive(Debug)]
pub struct OrtRuntime {
    /// Absolute path of the library that was loaded.
    pub path: PathBuf,
    /// Where it was found.
    pub source: LibrarySource,
    /// The version the library reports (`OrtGetApiBase()->GetVersionString()`).
    pub version: String,
    /// `ort`'s process-wide environment.
    pub environment: ort::environment::Environment,
}

static RUNTIME: OnceLock<OrtRuntime> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime once per process and returns it; later calls return the same runtime.
///
/// `explicit` is `--ort-lib`. Asking for a different library after one is loaded is an
/// error: a process can hold only one ONNX Runtime.
pub fn init(explicit: Option<&Path>) -> anyhow::Result<&'static OrtRuntime> {
    if let Some(rt) = RUNTIME.get() {
        return same_library(rt, explicit);
    }
    let _guard = INIT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(rt) = RUNTIME.get() {
        return same_library(rt, explicit);
    }
    let (path, source) = locate(explicit)?;
    let (version, _probe) = checked_version(&path).map_err(|e| match source {
        LibrarySource::Cache | LibrarySource::Downloaded => anyhow::anyhow!(
            "{e:#}; the cached copy is unusable: delete {} to fetch it again, or {FIX}",
            path.display()
        ),
        LibrarySource::Flag | LibrarySource::Env => anyhow::anyhow!("{source}: {e:#}; {FIX}"),
    })?;
    // `_probe` keeps the library mapped while `ort` opens it again, so it is loaded once.
    let environment = ort::init_from(&path)
        .with_context(|| format!("loading ONNX Runtime from {}", path.display()))?
        .with_name("netfm")
        .build()
        .context("creating the ONNX Runtime environment")?;
    Ok(RUNTIME.get_or_init(|| OrtRuntime {
        path,
        source,
        version,
        environment,
    }))
}

fn same_library(
    rt: &'static OrtRuntime,
    explicit: Option<&Path>,
) -> anyhow::Result<&'static OrtRuntime> {
    if let Some(wanted) = explicit {
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if canonical(wanted) != canonical(&rt.path) {
            bail!(
                "ONNX Runtime is already loaded from {} in this process; cannot switch to {}",
                rt.path.display(),
                wanted.display()
            );
        }
    }
    Ok(rt)
}

/// Finds the library: `--ort-lib`, `ORT_DYLIB_PATH`, the cache, or a fresh download into it.
pub fn locate(explicit: Option<&Path>) -> anyhow::Result<(PathBuf, LibrarySource)> {
    if let Some(p) = explicit {
        return Ok((existing_file(p, "--ort-lib")?, LibrarySource::Flag));
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok((
            existing_file(Path::new(&p), "ORT_DYLIB_PATH")?,
            LibrarySource::Env,
        ));
    }
    let dir = cache_dir()?;
    let cached = dir.join(LIBRARY_FILE);
    if cached.is_file() {
        return Ok((cached, LibrarySource::Cache));
    }
    let path = download_into(&dir)?;
    Ok((path, LibrarySource::Downloaded))
}

fn existing_file(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(path)
        .with_context(|| format!("{what}: cannot resolve {}", path.display()))?;
    if !abs.is_file() {
        bail!(
            "{what}: ONNX Runtime library {} does not exist or is not a file; {FIX}",
            abs.display()
        );
    }
    Ok(abs)
}

/// The cache folder that holds `libonnxruntime.so.1.31.1`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("NETFM_ORT_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        });
    match base {
        Some(base) => Ok(base.join("netfm").join(format!("onnxruntime-{ORT_VERSION}"))),
        None => bail!("no cache folder for ONNX Runtime: HOME and XDG_CACHE_HOME are unset; set NETFM_ORT_DIR, or {FIX}"),
    }
}

/// Opens the library and reads its version, without handing it to `ort`. Returns the open
/// library so the caller can keep it mapped.
fn checked_version(path: &Path) -> anyhow::Result<(String, libloading::Library)> {
    // SAFETY: loading a shared library runs its initialisers. The file was named as ONNX
    // Runtime by the user or is our own checked copy; ONNX Runtime's initialisers are sound.
    let lib = unsafe { libloading::Library::new(path) }
        .with_context(|| format!("{} is not a loadable shared library", path.display()))?;
    // SAFETY: `OrtGetApiBase` is ONNX Runtime's C entry point with exactly this signature.
    let get_base = unsafe {
        lib.get::<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase>(b"OrtGetApiBase")
    }
    .with_context(|| {
        format!(
            "{} is not ONNX Runtime: it has no OrtGetApiBase",
            path.display()
        )
    })?;
    // SAFETY: the entry point takes no arguments and returns a pointer to a static struct.
    let base = unsafe { get_base() };
    if base.is_null() {
        bail!("{}: OrtGetApiBase returned nothing", path.display());
    }
    // SAFETY: `base` points to ONNX Runtime's static `OrtApiBase`; `GetVersionString`
    // returns a static NUL-terminated string.
    let raw = unsafe { ((*base).GetVersionString)() };
    if raw.is_null() {
        bail!("{}: ONNX Runtime reported no version", path.display());
    }
    // SAFETY: non-null and NUL-terminated, per the C API.
    let version = unsafe { CStr::from_ptr(raw) }
        .to_string_lossy()
        .into_owned();
    let wanted_minor = ORT_VERSION
        .rsplit_once('.')
        .map_or(ORT_VERSION, |(mm, _)| mm);
    if !version.starts_with(&format!("{wanted_minor}.")) {
        bail!(
            "{} is ONNX Runtime {version}; netfm needs {wanted_minor}.x ({ORT_VERSION} is tested)",
            path.display()
        );
    }
    Ok((version, lib))
}

fn pinned_wheel() -> anyhow::Result<&'static PinnedWheel> {
    if std::env::consts::OS != "linux" {
        bail!(
            "netfm fetches ONNX Runtime automatically only on Linux (this is {}); {FIX}",
            std::env::consts::OS
        );
    }
    WHEELS
        .iter()
        .find(|w| w.arch == std::env::consts::ARCH)
        .with_context(|| {
            format!(
                "no pinned onnxruntime wheel for {}; {FIX}",
                std::env::consts::ARCH
            )
        })
}

/// A uniquely named folder inside the cache folder (same file system, so the final rename is
/// atomic), removed when dropped.
struct StagingDir(PathBuf);

impl StagingDir {
    fn new(parent: &Path) -> anyhow::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            ".download-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = parent.join(name);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(StagingDir(path))
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fetches the pinned wheel with pip, checks it, and renames the library into `dir`.
fn download_into(dir: &Path) -> anyhow::Result<PathBuf> {
    let wheel = pinned_wheel()?;
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "creating the ONNX Runtime cache folder {} (set NETFM_ORT_DIR to use another), or {FIX}",
            dir.display()
        )
    })?;
    let staging = StagingDir::new(dir)?;
    eprintln!(
        "netfm: ONNX Runtime {ORT_VERSION} not found; fetching the onnxruntime=={ORT_VERSION} wheel with pip into {}",
        dir.display()
    );
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--python-version",
            WHEEL_PYTHON,
            "--platform",
            wheel.platform,
        ])
        .arg(format!("onnxruntime=={ORT_VERSION}"))
        .arg("-d")
        .arg(&staging.0)
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => bail!(
            "cannot run python3 to fetch ONNX Runtime ({e}): install python3 and pip (Debian: apt-get install python3-pip), or {FIX}"
        ),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let hint = if stderr.contains("No module named pip") {
            "install pip (Debian: apt-get install python3-pip), or "
        } else {
            "check the network connection to PyPI, or "
        };
        bail!(
            "`python3 -m pip download onnxruntime=={ORT_VERSION}` failed ({}):\n{}\n{hint}{FIX}",
            out.status,
            tail.join("\n")
        );
    }
    let whl = single_wheel(&staging.0)?;
    let digest = sha256_file(&whl)?;
    if digest != wheel.sha256 {
        bail!(
            "{} has sha256 {digest}, expected {}: the download is damaged or not the pinned wheel; {FIX}",
            whl.display(),
            wheel.sha256
        );
    }
    let unpacked = staging.0.join(LIBRARY_FILE);
    let member = format!("onnxruntime/capi/{LIBRARY_FILE}");
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], 'wb') as f:\n    f.write(z.read(sys.argv[2]))")
        .arg(&whl)
        .arg(&member)
        .arg(&unpacked)
        .output()
        .context("running python3 to unpack the wheel")?;
    if !out.status.success() {
        bail!(
            "unpacking {member} from {} failed: {}; {FIX}",
            whl.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let target = dir.join(LIBRARY_FILE);
    // Another process may have put its (identical) copy there first; replacing it is
    // harmless, and processes that already opened it keep the old inode.
    std::fs::rename(&unpacked, &target)
        .with_context(|| format!("moving the library into {}", target.display()))?;
    Ok(target)
}

fn single_wheel(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut wheels = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            wheels.push(path);
        }
    }
    match wheels.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "pip left {} wheel files in {}, expected one; {FIX}",
            wheels.len(),
            dir.display()
        ),
    }
}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").expect("write");
        assert_eq!(
            sha256_file(&p).expect("hash"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_missing_explicit_library_names_the_path_and_the_fix() {
        let err =
            locate(Some(Path::new("/nonexistent/libonnxruntime.so"))).expect_err("missing file");
        let msg = format!("{err:#}");
        assert!(msg.contains("/nonexistent/libonnxruntime.so"), "{msg}");
        assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");
    }

    #[test]
    fn a_text_file_is_not_a_library() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("libonnxruntime.so.1.31.1");
        std::fs::write(&p, b"not an ELF file").expect("write");
        let err = checked_version(&p).expect_err("not a library");
        assert!(format!("{err:#}").contains("not a loadable shared library"));
    }

    #[test]
    fn every_pinned_wheel_hash_is_sha256_hex() {
        for w in WHEELS {
            assert_eq!(w.sha256.len(), 64);
            assert!(w.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
