//! ONNX Runtime end to end: `netfm doctor` finding (or fetching) the real library, the errors
//! a user sees when it cannot, and sessions built by `netfm::runtime` running a real model.
//! The first test process on a fresh machine fetches the pinned wheel; the others race it,
//! which the cache's rename-into-place must survive.

use netfm::runtime::{self, Device, RuntimeOptions};
use ort::memory::Allocator;
use ort::value::Tensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn netfm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netfm"))
}

fn add_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/add.onnx")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs netfm and expects exit code 2 with a message, never a panic.
fn fails_cleanly(cmd: &mut Command) -> String {
    let out: Output = cmd.output().expect("netfm runs");
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2\nstdout:\n{}\nstderr:\n{stderr}",
        text(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    stderr
}

#[test]
fn doctor_reports_the_library_and_a_working_cpu() {
    let out = netfm().arg("doctor").output().expect("netfm runs");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(stdout.contains("ONNX Runtime      1.31.1"), "{stdout}");
    assert!(stdout.contains("libonnxruntime.so.1.31.1"), "{stdout}");
    assert!(stdout.contains("CPUExecutionProvider"), "{stdout}");
    assert!(stdout.contains("cpu               ok"), "{stdout}");
    assert!(stdout.contains("intra-op threads"), "{stdout}");
}

#[test]
fn doctor_with_a_missing_ort_lib_names_the_path() {
    let missing = "/nonexistent/netfm-test/libonnxruntime.so.1.31.1";
    let stderr = fails_cleanly(netfm().args(["doctor", "--ort-lib", missing]));
    assert!(stderr.contains(missing), "{stderr}");
    assert!(stderr.contains("ORT_DYLIB_PATH"), "{stderr}");
}

#[test]
fn ort_dylib_path_to_a_file_that_is_not_a_library_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("libonnxruntime.so.1.31.1");
    std::fs::write(&fake, b"this is not a shared library\n").expect("write");
    let stderr = fails_cleanly(netfm().arg("doctor").env("ORT_DYLIB_PATH", &fake));
    assert!(stderr.contains("not a loadable shared library"), "{stderr}");
    assert!(stderr.contains(&fake.display().to_string()), "{stderr}");
}

#[test]
fn an_unknown_device_is_a_usage_error() {
    let stderr = fails_cleanly(netfm().args(["doctor", "--device", "bogus"]));
    assert!(stderr.contains("expected cpu, cuda or cuda:N"), "{stderr}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_how_to_get_it() {
    let stderr = fails_cleanly(netfm().args(["doctor", "--device", "cuda"]));
    assert!(stderr.contains("`cuda` feature"), "{stderr}");
    assert!(stderr.contains("--features cuda"), "{stderr}");
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_either_runs_or_says_why_not() {
    let out = netfm()
        .args(["doctor", "--device", "cuda"])
        .output()
        .expect("netfm runs");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    match out.status.code() {
        Some(0) => assert!(stdout.contains("cuda:0            ok"), "{stdout}"),
        Some(2) => assert!(stderr.contains("cuda"), "{stderr}"),
        other => panic!("doctor --device cuda exited {other:?}:\n{stdout}\n{stderr}"),
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_session_from_bytes_runs_the_add_model() {
    let bytes = std::fs::read(add_model()).expect("tests/data/onnx/add.onnx");
    let opts = RuntimeOptions {
        intra_threads: Some(1),
        ..RuntimeOptions::default()
    };
    let mut session = runtime::session_from_bytes(&opts, &bytes).expect("session");
    let x = Tensor::from_array(([2usize], vec![1.0_f32, 2.5])).expect("tensor");
    let outputs = session.run(ort::inputs!["X" => x]).expect("run");
    let (shape, y) = outputs
        .get("Y")
        .expect("output Y")
        .try_extract_tensor::<f32>()
        .expect("f32");
    assert_eq!(**shape, [2]);
    assert_eq!(y, [2.0, 5.0]);
}

#[test]
fn a_session_from_file_runs_with_pre_bound_buffers() {
    let opts = RuntimeOptions::default();
    assert_eq!(opts.device, Device::Cpu);
    let mut session = runtime::session_from_file(&opts, &add_model()).expect("session");
    // The training loop's pattern: inputs and outputs bound once to buffers we own, each
    // run writes into the output buffer in place.
    let mut binding = session.create_binding().expect("binding");
    let mut x = Tensor::<f32>::new(&Allocator::default(), [2usize]).expect("input buffer");
    x.extract_tensor_mut().1.copy_from_slice(&[3.0, -1.0]);
    let y = Tensor::<f32>::new(&Allocator::default(), [2usize]).expect("output buffer");
    binding.bind_input("X", &x).expect("bind X");
    binding.bind_output("Y", y).expect("bind Y");
    let first: Vec<f32> = {
        let out = session.run_binding(&binding).expect("run");
        out["Y"]
            .try_extract_tensor::<f32>()
            .expect("f32")
            .1
            .to_vec()
    };
    assert_eq!(first, [6.0, -2.0]);
    x.extract_tensor_mut().1.copy_from_slice(&[0.5, 4.0]);
    binding.bind_input("X", &x).expect("rebind X");
    let out = session.run_binding(&binding).expect("run again");
    assert_eq!(
        out["Y"].try_extract_tensor::<f32>().expect("f32").1,
        [1.0, 8.0]
    );
}

#[test]
fn a_missing_model_file_is_an_error() {
    let err = runtime::session_from_file(&RuntimeOptions::default(), Path::new("/no/model.onnx"))
        .expect_err("missing model");
    assert!(format!("{err:#}").contains("/no/model.onnx"));
}

#[test]
fn garbage_model_bytes_are_an_error() {
    let err = runtime::session_from_bytes(&RuntimeOptions::default(), b"not a model")
        .expect_err("garbage");
    assert!(format!("{err:#}").contains("ONNX model"), "{err:#}");
}
