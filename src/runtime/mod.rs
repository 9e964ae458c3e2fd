//! ONNX Runtime for every model job: which library, which device, how many threads, and
//! sessions built from ONNX bytes or files.
//!
//! Sessions come only from here, so every job honours `--ort-lib`, `--device` and `--threads`
//! the same way. A device that was asked for either works or is an error: a failed CUDA
//! set-up never falls back to the CPU silently.

pub mod encoder;
pub mod host;
pub mod ortlib;
pub mod trainer;

pub use ortlib::{init, LibrarySource, OrtRuntime, LIBRARY_FILE, ORT_VERSION};

use anyhow::{bail, Context};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::Tensor;
use std::ffi::CStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// `Y = X + X` over float32 `[2]` (tests/data/onnx/add.onnx): the smallest model that proves a
/// session can be created and run on a device.
pub const PROBE_MODEL: &[u8] = include_bytes!("../../tests/data/onnx/add.onnx");

/// Where a session runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
    /// CUDA device N (`cuda` is `cuda:0`); needs the `cuda` cargo feature.
    Cuda(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A `--device` value that is not `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, thiserror::Error)]
#[error("device `{0}`: expected cpu, cuda or cuda:N (N the CUDA device number)")]
pub struct ParseDeviceError(String);

impl FromStr for Device {
    type Err = ParseDeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => lower
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| ParseDeviceError(s.to_string())),
        }
    }
}

/// How much ONNX Runtime rewrites a graph before running it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OptimizationLevel {
    /// No rewrites: the graph runs as written.
    Disabled,
    /// Constant folding and redundant-node removal only. Float64 gradient checks need this
    /// or `Disabled`: higher levels move constants into float32 attributes.
    Basic,
    /// Basic plus operator fusions.
    Extended,
    /// Everything, including layout changes: fastest for float32.
    #[default]
    All,
}

impl From<OptimizationLevel> for GraphOptimizationLevel {
    fn from(level: OptimizationLevel) -> Self {
        match level {
            OptimizationLevel::Disabled => GraphOptimizationLevel::Disable,
            OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
            OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
            OptimizationLevel::All => GraphOptimizationLevel::All,
        }
    }
}

/// Everything a session is built from, besides the model.
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    /// The ONNX Runtime library (`--ort-lib`); `None` looks in `ORT_DYLIB_PATH`, then the cache.
    pub ort_lib: Option<PathBuf>,
    pub device: Device,
    /// Threads inside one operator; `None` is every core ([`default_intra_threads`]).
    pub intra_threads: Option<usize>,
    /// `Some(n)`: run independent branches of the graph in parallel on `n` threads.
    /// `None`: one node at a time (ONNX Runtime's default).
    pub inter_threads: Option<usize>,
    pub optimization: OptimizationLevel,
}

impl RuntimeOptions {
    /// The intra-op thread count sessions get.
    pub fn intra_threads(&self) -> usize {
        self.intra_threads.unwrap_or_else(default_intra_threads)
    }
}

/// Every core this process may use.
pub fn default_intra_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A session builder with the options applied and the device's execution provider registered.
pub fn session_builder(opts: &RuntimeOptions) -> anyhow::Result<SessionBuilder> {
    let rt = init(opts.ort_lib.as_deref())?;
    let threads = opts.intra_threads();
    if threads == 0 || opts.inter_threads == Some(0) {
        bail!("thread counts must be at least 1");
    }
    let mut builder = Session::builder(&rt.environment)
        .context("creating an ONNX Runtime session builder")?
        .with_optimization_level(opts.optimization.into())
        .map_err(builder_error)
        .context("setting the graph optimization level")?
        .with_intra_threads(threads)
        .map_err(builder_error)
        .with_context(|| format!("setting {threads} intra-op threads"))?;
    if let Some(n) = opts.inter_threads {
        builder = builder
            .with_parallel_execution(true)
            .map_err(builder_error)
            .context("enabling parallel execution")?
            .with_inter_threads(n)
            .map_err(builder_error)
            .with_context(|| format!("setting {n} inter-op threads"))?;
    }
    match opts.device {
        Device::Cpu => Ok(builder),
        Device::Cuda(id) => with_cuda(builder, id, rt),
    }
}

/// Drops the builder that `ort` hands back with a builder error, keeping the message.
fn builder_error(e: ort::Error<SessionBuilder>) -> ort::Error {
    e.into()
}

#[cfg(feature = "cuda")]
fn with_cuda(builder: SessionBuilder, id: u32, rt: &OrtRuntime) -> anyhow::Result<SessionBuilder> {
    use ort::ep::{ExecutionProvider, CUDA};
    let available = CUDA::is_available().context("asking ONNX Runtime for its providers")?;
    if !available {
        bail!(
            "--device cuda:{id}: the ONNX Runtime library at {} has no CUDA execution provider; \
             point ORT_DYLIB_PATH or --ort-lib at onnxruntime/capi/libonnxruntime.so.{ORT_VERSION} \
             from the onnxruntime-gpu=={ORT_VERSION} wheel",
            rt.path.display()
        );
    }
    let device_id =
        i32::try_from(id).with_context(|| format!("CUDA device {id} is out of range"))?;
    builder
        .with_execution_providers([CUDA::default()
            .with_device_id(device_id)
            .build()
            .error_on_failure()])
        .map_err(builder_error)
        .with_context(|| {
            format!(
                "--device cuda:{id}: the CUDA execution provider did not start \
                 (it needs an NVIDIA driver, CUDA 13 and cuBLAS 13 libraries on the loader path, \
                 and device {id} to exist)"
            )
        })
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(_: SessionBuilder, id: u32, _: &OrtRuntime) -> anyhow::Result<SessionBuilder> {
    bail!("--device cuda:{id}: {CUDA_NOT_BUILT}")
}

/// Why CUDA is unavailable in a build without the `cuda` feature.
pub const CUDA_NOT_BUILT: &str = "this netfm was built without the `cuda` feature; \
     rebuild with `cargo build --release --features cuda`";

/// A session for an ONNX model held in memory.
pub fn session_from_bytes(opts: &RuntimeOptions, model: &[u8]) -> anyhow::Result<Session> {
    session_builder(opts)?
        .commit_from_memory(model)
        .with_context(|| {
            format!(
                "loading a {}-byte ONNX model on {}",
                model.len(),
                opts.device
            )
        })
}

/// A session for an ONNX model file.
pub fn session_from_file(opts: &RuntimeOptions, path: &Path) -> anyhow::Result<Session> {
    if !path.is_file() {
        bail!("ONNX model {} does not exist", path.display());
    }
    session_builder(opts)?
        .commit_from_file(path)
        .with_context(|| format!("loading ONNX model {} on {}", path.display(), opts.device))
}

/// The execution providers the loaded ONNX Runtime library was built with, e.g.
/// `["CPUExecutionProvider"]`. Built with is not the same as usable: CUDA may still fail to
/// start (see [`probe`]).
pub fn available_providers(ort_lib: Option<&Path>) -> anyhow::Result<Vec<String>> {
    init(ort_lib)?;
    let api = ort::api();
    let mut names: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut len: std::ffi::c_int = 0;
    // SAFETY: the C API fills `names` with `len` NUL-terminated strings that we release below.
    unsafe { ort::Error::result_from_status((api.GetAvailableProviders)(&mut names, &mut len)) }
        .context("asking ONNX Runtime for its execution providers")?;
    if names.is_null() {
        return Ok(Vec::new());
    }
    let count = usize::try_from(len).unwrap_or(0);
    let providers = (0..count)
        // SAFETY: `names` holds `count` valid C strings until released.
        .map(|i| {
            unsafe { CStr::from_ptr(*names.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // SAFETY: releases exactly what `GetAvailableProviders` returned.
    unsafe { ort::Error::result_from_status((api.ReleaseAvailableProviders)(names, len)) }
        .context("releasing ONNX Runtime's provider list")?;
    Ok(providers)
}

/// Creates a session for [`PROBE_MODEL`] with `opts` (device included), runs it and checks
/// the answer: the proof that sessions work there.
pub fn probe(opts: &RuntimeOptions) -> anyhow::Result<()> {
    let mut session = session_from_bytes(opts, PROBE_MODEL)?;
    let input = [1.5_f32, -2.0];
    let x = Tensor::from_array(([input.len()], input.to_vec()))?;
    let outputs = session
        .run(ort::inputs!["X" => x])
        .with_context(|| format!("running the probe model on {}", opts.device))?;
    let (_, y) = outputs
        .get("Y")
        .context("the probe model has no output Y")?
        .try_extract_tensor::<f32>()
        .context("reading the probe model's output")?;
    let expected = input.map(|v| v + v);
    if y != expected {
        bail!(
            "the probe model computed {y:?} on {}, expected {expected:?}",
            opts.device
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_parsing() {
        assert_eq!("cpu".parse::<Device>().ok(), Some(Device::Cpu));
        assert_eq!("CUDA".parse::<Device>().ok(), Some(Device::Cuda(0)));
        assert_eq!("cuda:3".parse::<Device>().ok(), Some(Device::Cuda(3)));
        for bad in ["", "gpu", "cuda:", "cuda:-1", "cuda:x", "cpu:0"] {
            let err = bad.parse::<Device>().expect_err(bad);
            assert!(err.to_string().contains("expected cpu, cuda or cuda:N"));
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn default_threads_are_all_cores() {
        let opts = RuntimeOptions::default();
        assert_eq!(opts.intra_threads(), default_intra_threads());
        assert!(default_intra_threads() >= 1);
    }
}
