//! Dataset sinks: native Parquet (zstd, Hive-style parts) in [`parquet`], and netFound's
//! Arrow IPC schema in [`netfound_ipc`]. Both share the burst columns of [`burst_columns`].

pub mod burst_columns;
pub mod flat_columns;
pub mod netfound_ipc;
pub mod output;
pub mod parquet;
pub mod reader;
pub mod token_column;

/// A one-burst UDP flow whose `tokens` tokens all equal `value`: the writers' test input.
#[cfg(test)]
pub(crate) fn one_burst_flow(
    value: u16,
    tokens: usize,
    forward: bool,
) -> netfm_tokenizer::TokenizedFlow {
    netfm_tokenizer::TokenizedFlow {
        flow_duration_us: 0,
        protocol: 17,
        tokens: vec![value; tokens],
        bursts: vec![netfm_tokenizer::Burst {
            token_len: tokens as u32,
            forward,
            bytes: 40,
            count: 1,
            iat_us: 0,
            start_ns: 0,
        }],
        packets: 1,
        inexact_late_packets: 0,
    }
}

/// Runs `python3 -c script args...` (the tests' real consumer, pyarrow); panics with its
/// stderr unless it succeeds, else returns its stdout.
#[cfg(test)]
pub(crate) fn python(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}
