//! The `flowpilot` binary: parse the command line, hand off to `app::run`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = flowpilot::config::Cli::parse();
    match flowpilot::app::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flowpilot: {e:#}");
            ExitCode::FAILURE
        }
    }
}
