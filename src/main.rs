//! The `flowpilot` binary: parse the command line, hand off to `app::run`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = flowpilot::config::Cli::from_env();
    match flowpilot::app::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flowpilot: {e:#}");
            ExitCode::FAILURE
        }
    }
}
