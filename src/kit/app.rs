//! Process-level plumbing shared by every cncpick executable: logging, the
//! environment check, ROS arguments, the runtime, and orderly shutdown.

use crate::kit::spin::{create_node, SharedNode, Spinner};

/// Sets up `tracing` output on stderr, filtered by RUST_LOG (default info).
pub fn init_tracing() {
    init_tracing_at(None)
}

/// As [`init_tracing`]; a level from `--ros-args --log-level` wins over RUST_LOG.
pub fn init_tracing_at(level: Option<&str>) {
    let filter = level
        .and_then(|l| tracing_subscriber::EnvFilter::try_new(l.to_lowercase()).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Drops the `--ros-args ... [--]` section `ros2 launch` appends, so our own
/// argument parser sees only our arguments.
pub fn strip_ros_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_ros = false;
    for a in args {
        match a.as_str() {
            "--ros-args" => in_ros = true,
            "--" if in_ros => in_ros = false,
            _ if in_ros => {}
            _ => out.push(a),
        }
    }
    out
}

/// Set once [`catch_stop_signals`] has caught Ctrl-C or SIGTERM.
static STOP: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> = std::sync::OnceLock::new();

/// Catches Ctrl-C and SIGTERM from now on, for [`shutdown_signal`]. A stop
/// that comes while the process is still starting (before anything awaits
/// it) is kept, and the process stops cleanly once started. Without this,
/// the default action killed it, leaving its Fast DDS shared memory
/// behind. Call within a tokio runtime, before the r2r context is made.
pub fn catch_stop_signals() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if STOP.get().is_some() {
            return;
        }
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        if STOP.set(rx).is_err() {
            return;
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = tx.send(true);
        });
    }
}

/// Resolves on Ctrl-C or SIGTERM, including one [`catch_stop_signals`]
/// caught before this was called.
pub async fn shutdown_signal() {
    if let Some(rx) = STOP.get() {
        // An error: the catching task's runtime is gone; wait afresh.
        if rx.clone().wait_for(|stop| *stop).await.is_ok() {
            return;
        }
    }
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A running node: the shared handle and its spin thread.
pub struct RunningNode {
    pub node: SharedNode,
    spinner: Spinner,
}

impl RunningNode {
    pub fn start(ctx: &r2r::Context, name: &str, namespace: &str) -> anyhow::Result<Self> {
        let node = create_node(ctx, name, namespace)?;
        let spinner = Spinner::start(node.clone());
        Ok(RunningNode { node, spinner })
    }

    /// Stops the spin thread; call after the node's tasks have stopped.
    pub fn stop(mut self) {
        self.spinner.stop();
    }
}

/// Checks the environment (exiting with an explanation if it is broken),
/// creates the ROS context, and runs `body` on a multi-threaded runtime.
pub fn run<T, F, Fut>(body: F) -> anyhow::Result<T>
where
    F: FnOnce(r2r::Context) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    init_tracing();
    crate::kit::env::require_or_exit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ctx = {
        let _in = rt.enter();
        catch_stop_signals();
        r2r::Context::create()?
    };
    rt.block_on(body(ctx))
}

/// Aborts `tasks` and waits until each has stopped, so the r2r handles they
/// hold are released before their node is dropped.
pub async fn stop_tasks(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_signal_that_comes_before_anyone_waits_for_it_is_kept() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            catch_stop_signals();
            // As `ros2 launch` stops a node that is still starting. Without
            // the catch, the default action kills this test's process.
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &std::process::id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
            tokio::time::timeout(std::time::Duration::from_secs(10), shutdown_signal())
                .await
                .expect("the SIGTERM sent before the wait ends it");
        });
    }
}
