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

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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
    let ctx = r2r::Context::create()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
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
