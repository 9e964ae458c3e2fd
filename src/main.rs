//! The `netfm` binary: parses the command line and hands off to the library.

use clap::Parser;
use netfm::cli::{Cli, Command, ModelCommand};
use std::process::ExitCode;

// The flow table allocates and frees small token buffers per flow; mimalloc is several
// times faster at that than glibc's allocator (see benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the mimalloc v3 that libmimalloc-sys 0.1.49 builds.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Flows are freed on the writer thread while the flow table allocates new ones: with
    // purging, mimalloc hands those pages back to the OS and faults fresh zeroed pages right
    // after (about 15% of a tokenize run). netfm's memory is bounded by its own settings,
    // so keep freed pages for reuse.
    // SAFETY: sets a plain integer option; mimalloc reads it on each purge decision.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // No transparent huge pages: mimalloc asks for them on its arenas, and the first touch of
    // each 2 MiB page then zeroes all of it. The flow table touches its memory sparsely, so
    // with THP a tokenize run spent 1-2 s of system time zeroing pages (0.5 s without; see
    // benches/README.md). Applies to the whole process, mappings made before it included.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tokenize(args) => netfm::commands::tokenize(&args),
        Command::Demo(args) => netfm::commands::demo(&args),
        Command::Doctor(args) => netfm::commands::doctor(&args),
        Command::Model(ModelCommand::Export(args)) => netfm::commands::model_export(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netfm: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
