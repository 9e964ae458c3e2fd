//! What the stage benchmarks in `examples/` share: the netfm binary's memory settings and
//! their command line (`CAPTURE [--flag value]...`).

use netfm::capture::{expand_inputs, Input};
use std::path::PathBuf;

/// Command-line arguments of a stage benchmark.
pub struct Args {
    args: Vec<String>,
}

impl Args {
    /// Applies the netfm binary's memory settings (its allocator is declared by each
    /// example) and reads the arguments.
    pub fn start() -> Args {
        netfm::process::tune_memory();
        Args {
            args: std::env::args().skip(1).collect(),
        }
    }

    /// The capture named by the first argument (a file, or the first capture below a
    /// directory).
    pub fn input(&self, usage: &str) -> anyhow::Result<Input> {
        let capture = self
            .args
            .first()
            .filter(|a| !a.starts_with("--"))
            .ok_or_else(|| anyhow::anyhow!("usage: {usage}"))?;
        expand_inputs(&[PathBuf::from(capture)])?
            .inputs
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no capture found in {capture}"))
    }

    /// The value after `name`, if given.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }

    /// The value after `name` parsed, or `default`.
    pub fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        Ok(self
            .flag(name)
            .map(str::parse)
            .transpose()?
            .unwrap_or(default))
    }
}
