//! The `netfm` binary: parses the command line and hands off to the library.

use clap::Parser;
use netfm::cli::{Cli, Command};
use std::process::ExitCode;

// The flow table allocates and frees small token buffers per flow; mimalloc is several
// times faster at that than glibc's allocator (see benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tokenize(args) => netfm::commands::tokenize(&args),
        Command::Demo(args) => netfm::commands::demo(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netfm: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
