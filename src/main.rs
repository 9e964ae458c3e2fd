//! The `netfm` binary: parses the command line and hands off to the library.

use clap::Parser;
use netfm::cli::{Cli, Command, ForecastCommand, ModelCommand};
use std::process::ExitCode;

// The flow table allocates and frees small token buffers per flow; mimalloc is several
// times faster at that than glibc's allocator (see benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    netfm::process::tune_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tokenize(args) => netfm::commands::tokenize(&args),
        Command::Demo(args) => netfm::commands::demo(&args),
        Command::Doctor(args) => netfm::commands::doctor(&args),
        Command::Model(ModelCommand::Export(args)) => netfm::commands::model_export(&args),
        Command::Model(ModelCommand::Import(args)) => netfm::commands::model_import(&args),
        Command::Pretrain(args) => netfm::commands::pretrain(&args),
        Command::Embed(args) => netfm::commands::embed(&args),
        Command::Finetune(args) => netfm::commands::finetune(&args),
        Command::Predict(args) => netfm::commands::predict(&args),
        Command::Export(args) => netfm::commands::export(&args),
        Command::Plot(args) => netfm::commands::plot(&args),
        Command::Loads(args) => netfm::commands::loads(&args),
        Command::Forecast(ForecastCommand::Series(args)) => netfm::commands::forecast_series(&args),
        Command::Forecast(ForecastCommand::Backtest(args)) => {
            netfm::commands::forecast_backtest(&args)
        }
        Command::Forecast(ForecastCommand::Train(args)) => netfm::commands::forecast_train(&args),
        Command::Forecast(ForecastCommand::Predict(args)) => {
            netfm::commands::forecast_predict(&args)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netfm: error: {}", netfm::commands::error_message(&e));
            ExitCode::from(2)
        }
    }
}
