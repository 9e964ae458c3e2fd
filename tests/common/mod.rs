//! Helpers shared by the integration tests (each test file includes this with `mod common;`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The bundled captures.
pub fn pcaps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/pcaps")
}

/// netFound's conformance set: `../shared/conformance/netfound`, or `NETFM_CONFORMANCE_DIR`.
pub fn conformance_dir() -> PathBuf {
    let dir = match std::env::var_os("NETFM_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/netfound"),
    };
    assert!(
        dir.join("summary.json").is_file(),
        "netFound conformance data not found at {} (set NETFM_CONFORMANCE_DIR)",
        dir.display()
    );
    dir
}

/// Runs Python `code` with `sys.argv[1:]` = `args` (the tests' real consumers: pyarrow,
/// DuckDB); fails the test with its stderr unless it succeeds, else returns its stdout.
pub fn python(code: &str, args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Runs `cmd` and fails the test, showing its output, unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("netfm runs");
    assert!(
        out.status.success(),
        "netfm failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The netfm binary of this build.
pub fn netfm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netfm"))
}

/// A command's stdout and stderr together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs netfm and fails the test, showing its output, unless it succeeds.
pub fn ok(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("run netfm");
    assert!(o.status.success(), "netfm failed:\n{}", text(&o));
    o
}

/// Fails with exit code 2 and a one-line `netfm: error:` message (no panic); returns it.
pub fn fails(cmd: &mut Command) -> String {
    let o = cmd.output().expect("run netfm");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "expected a clean error:\n{t}");
    assert!(t.contains("netfm: error:"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    t
}

/// The summary a `--json` run printed on stdout.
pub fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("summary JSON on stdout")
}
