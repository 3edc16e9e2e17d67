//! Shutdown signals.

/// Resolves on the first SIGTERM or Ctrl-C. A second signal exits the process at once.
pub async fn shutdown_signal() {
    wait_signal().await;
    tracing::info!("shutdown signal received; draining (send again to exit at once)");
    tokio::spawn(async {
        wait_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
