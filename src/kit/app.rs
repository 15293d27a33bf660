//! Process-level plumbing shared by every cncpick executable: logging, the
//! environment check, ROS arguments, the runtime, and orderly shutdown.

use crate::kit::spin::{create_node, SharedNode, Spinner};
use std::time::Duration;

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
/// behind. From the stop signal on, the process (`what`) has
/// [`stop_bound`] to end ([`bound_the_stop`]), even if it is still
/// starting, stuck where the signal cannot reach it. Call within a tokio
/// runtime, before the r2r context is made.
pub fn catch_stop_signals(what: &str) {
    catch_stop_signals_with(Some(what.to_string()));
}

/// [`catch_stop_signals`], with the stop bounded or (`None`: a test's own
/// process, which must not be ended later) not.
fn catch_stop_signals_with(bounded: Option<String>) {
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
            if let Some(what) = bounded {
                bound_the_stop(&what, stop_bound());
            }
        });
    }
}

/// How long a process may take to stop once it has begun to (stopping its
/// nodes, its child processes, writing its report): a process whose Fast
/// DDS is stuck would otherwise never end (RELIABILITY §1).
pub const STOP_BOUND: Duration = Duration::from_secs(120);

/// The variable that sets [`stop_bound`], in seconds.
pub const STOP_BOUND_ENV: &str = "CNCPICK_STOP_BOUND_S";

/// How long a process may take to stop: [`STOP_BOUND`], or
/// [`STOP_BOUND_ENV`] when it is set to a positive number of seconds (one
/// that is not is warned about, naming it, and the default used).
pub fn stop_bound() -> Duration {
    let Some(v) = std::env::var_os(STOP_BOUND_ENV) else {
        return STOP_BOUND;
    };
    match v.to_str().and_then(|t| t.trim().parse::<f64>().ok()) {
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Duration::from_secs_f64(s),
        _ => {
            tracing::warn!(
                "{STOP_BOUND_ENV}={}: not a positive number of seconds; the stop is bounded at {STOP_BOUND:?}",
                v.to_string_lossy()
            );
            STOP_BOUND
        }
    }
}

/// The exit status of a process that did not stop within its bound (as
/// timeout(1)'s).
pub const FORCED_EXIT: i32 = 124;

/// Ends this process at once, running no destructors: those of a stuck
/// Fast DDS would wait on its stuck threads. Child processes started by
/// `cell::tied` get their SIGTERM from the kernel.
fn force_exit() -> ! {
    // SAFETY: _exit(2) has no preconditions.
    unsafe { libc::_exit(FORCED_EXIT) }
}

/// From now on this process has `bound` to end, whatever it is doing or
/// waiting on (its own stop, its destructors, Fast DDS's threads): past
/// it, the stop of `what` is logged as not done and the process exits at
/// once (status [`FORCED_EXIT`]). Call when the stop begins. (A second
/// stop signal does not force the exit: Ctrl-C reaches a `--processes`
/// cell's nodes as well as its supervisor, which then sends them SIGTERM
/// as part of their clean stop.)
pub fn bound_the_stop(what: &str, bound: Duration) {
    let what = what.to_string();
    let started = std::thread::Builder::new()
        .name("cncpick-stop-bound".into())
        .spawn(move || watch_the_stop(&what, bound, std::thread::sleep, || force_exit()));
    if let Err(e) = started {
        tracing::warn!("the stop is not bounded: {e}");
    }
}

/// [`bound_the_stop`]'s watch, on the clock `sleep` reads: waits out
/// `bound`, then logs and takes `exit`.
fn watch_the_stop(what: &str, bound: Duration, sleep: impl FnOnce(Duration), exit: impl FnOnce()) {
    sleep(bound);
    tracing::error!("{what}: not stopped within {bound:?}: exiting now");
    exit();
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
        let program = std::env::args().next().unwrap_or_default();
        let name = std::path::Path::new(&program).file_name();
        catch_stop_signals(&name.map_or(program.clone(), |n| n.to_string_lossy().into()));
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
    fn the_stop_bound_is_the_variables_when_it_is_a_positive_number_of_seconds() {
        std::env::remove_var(STOP_BOUND_ENV);
        assert_eq!(stop_bound(), STOP_BOUND);
        std::env::set_var(STOP_BOUND_ENV, "2.5");
        assert_eq!(stop_bound(), Duration::from_millis(2500));
        for bad in ["0", "-1", "soon", "inf", ""] {
            std::env::set_var(STOP_BOUND_ENV, bad);
            assert_eq!(stop_bound(), STOP_BOUND, "{bad:?}");
        }
        std::env::remove_var(STOP_BOUND_ENV);
    }

    #[test]
    fn the_stop_watch_waits_out_its_bound_then_exits() {
        let waited = std::cell::Cell::new(None);
        let exited = std::cell::Cell::new(false);
        watch_the_stop(
            "a cell",
            STOP_BOUND,
            |d| waited.set(Some(d)),
            || exited.set(true),
        );
        assert_eq!(waited.get(), Some(STOP_BOUND));
        assert!(exited.get());
    }

    #[test]
    fn a_stop_signal_that_comes_before_anyone_waits_for_it_is_kept() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            catch_stop_signals_with(None);
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
