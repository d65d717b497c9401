//! One root [`CancellationToken`] for the process, cancelled by SIGTERM or
//! SIGINT. Subsystems take a clone and stop intake when it fires; `main`
//! then waits for them to drain. A second signal exits at once.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Spawns the signal listener and returns the root token.
///
/// # Errors
/// When signal handlers cannot be installed.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let root = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(
            signal = name,
            "shutting down: stopping intake, draining running work"
        );
        root.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        warn!("second signal: exiting without draining");
        // NB: the only exit outside main; a second signal is the operator
        // asking for exactly this.
        std::process::exit(130);
    });
    Ok(token)
}
