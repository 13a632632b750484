//! SIGINT and SIGTERM during a run: the run stops with exit code 130 or 143
//! (the shell's 128 + signal number) and its trace is still saved.

use crate::outcome::ExitCode;
use crate::runtime;
use std::sync::atomic::Ordering;

/// Resolves on SIGINT (→ 130) or SIGTERM (→ 143), marking the run interrupted
/// before the work is dropped so its spans end with that status.
pub async fn shutdown_signal() -> ExitCode {
    let code = wait_signal().await;
    runtime::INTERRUPTED.store(true, Ordering::SeqCst);
    code
}

async fn wait_signal() -> ExitCode {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                _ = int.recv() => ExitCode::Interrupted,
                _ = term.recv() => ExitCode::Terminated,
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                ExitCode::Interrupted
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        ExitCode::Interrupted
    }
}
