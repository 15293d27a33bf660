//! The one way a cncpick lifecycle node starts: ROS arguments, validated
//! parameters, the node, its parameter services, its lifecycle, its health.

use crate::kit::app::{shutdown_signal, RunningNode};
use crate::kit::health::{Counters, Health};
use crate::kit::lifecycle::{ActiveGate, Callbacks, Faults, LifecycleHandle, Recovery};
use crate::kit::params::{load, NodeParams, Params, RosArgs};
use crate::kit::spin::SharedNode;
use std::time::Duration;

/// What a node's callbacks get to work with.
pub struct NodeContext<P: NodeParams> {
    pub node: SharedNode,
    /// Fully qualified name, e.g. `/cell/tracker`.
    pub fqn: String,
    pub params: Params<P>,
    /// Give this to the node's LifecyclePublishers.
    pub gate: ActiveGate,
    /// Report faults found while running here (see [`Faults`]).
    pub faults: Faults,
    /// Running counts, reported in the node's /diagnostics status.
    pub counters: Counters,
}

impl<P: NodeParams> NodeContext<P> {
    /// The node's namespace, e.g. `/cell`.
    pub fn namespace(&self) -> String {
        namespace_of(&self.fqn)
    }
}

/// The namespace part of a fully qualified node name.
pub fn namespace_of(fqn: &str) -> String {
    match fqn.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((ns, _)) => ns.into(),
    }
}

/// The spec of `heartbeat_period_s`, the parameter every node has.
pub const HEARTBEAT_SPEC: crate::kit::params::Spec = crate::kit::params::Spec::new(
    "heartbeat_period_s",
    "Period of Heartbeat and /diagnostics, s",
)
.range(0.01, 60.0);

/// The specs of `reconnect_initial_s` and `reconnect_max_s`, for nodes
/// that recover from faults with [`reconnect`].
pub const RECONNECT_INITIAL_SPEC: crate::kit::params::Spec = crate::kit::params::Spec::new(
    "reconnect_initial_s",
    "Wait before the first reconnect, s (then doubling)",
)
.range(0.0, 600.0)
.read_only();
pub const RECONNECT_MAX_SPEC: crate::kit::params::Spec =
    crate::kit::params::Spec::new("reconnect_max_s", "Longest wait between reconnects, s")
        .range(0.0, 3600.0)
        .read_only();

/// After a fault: configure and activate again up to `attempts` times,
/// backing off from `initial` doubling to `max` (0 attempts: stay in
/// error for the manager or an operator).
pub fn reconnect(attempts: i64, initial: Duration, max: Duration) -> Recovery {
    if attempts <= 0 {
        return Recovery::Stay;
    }
    Recovery::Reactivate(crate::kit::retry::RetryPolicy {
        max_attempts: attempts as u32,
        backoff: crate::kit::retry::Backoff {
            initial,
            multiplier: 2.0,
            max,
            jitter: 0.0,
        },
    })
}

/// Parameters every node has.
pub trait KitParams: NodeParams {
    fn heartbeat_period(&self) -> Duration;
    /// What the node does after a fault takes it out of Active.
    fn recovery(&self) -> Recovery {
        Recovery::Stay
    }
}

/// The `main` of a lifecycle node executable. Reads the ROS arguments
/// (`--ros-args -r __node:=... -r __ns:=... --params-file F -p k:=v
/// --log-level L`), checks the environment, loads and validates the
/// parameters before anything else (an error names the file or source and
/// the key, and the process exits with 1), then runs the node until Ctrl-C
/// or SIGTERM.
pub fn main<P, C, F>(default_name: &str, default_namespace: &str, make: F)
where
    P: KitParams,
    C: Callbacks,
    F: FnOnce(&NodeContext<P>) -> anyhow::Result<C>,
{
    let Started {
        name,
        namespace,
        params: initial,
    } = started::<P>(default_name, default_namespace);
    let result = (|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let ctx = {
            let _in = rt.enter();
            crate::kit::app::catch_stop_signals(&name);
            r2r::Context::create()?
        };
        rt.block_on(run(ctx, &name, &namespace, initial, make))
    })();
    if let Err(e) = result {
        fail(default_name, &format_args!("{e:#}"));
    }
}

/// A node process's name, namespace and validated parameters.
pub struct Started<P> {
    pub name: String,
    pub namespace: String,
    pub params: P,
}

/// Exits the process with `what` as the error of node `name`.
pub fn fail(name: &str, what: &dyn std::fmt::Display) -> ! {
    eprintln!("{name}: error: {what}");
    std::process::exit(1)
}

/// The start of every node process: reads the ROS arguments, sets up
/// logging, checks the environment and loads and validates the parameters
/// (an error names the file or source and the key, and the process exits
/// with 1).
pub fn started<P: NodeParams>(default_name: &str, default_namespace: &str) -> Started<P> {
    let args: Vec<String> = std::env::args().collect();
    let ros = RosArgs::parse(&args).unwrap_or_else(|e| fail(default_name, &e));
    crate::kit::app::init_tracing_at(ros.log_level.as_deref());
    crate::kit::env::require_or_exit();
    let name = ros
        .node_name
        .clone()
        .unwrap_or_else(|| default_name.to_string());
    let namespace = ros
        .namespace
        .clone()
        .unwrap_or_else(|| default_namespace.to_string());
    let fqn = format!("{}/{}", namespace.trim_end_matches('/'), name);
    let params: P =
        load(&fqn, &ros, |k| std::env::var(k).ok()).unwrap_or_else(|e| fail(default_name, &e));
    Started {
        name,
        namespace,
        params,
    }
}

async fn run<P, C, F>(
    ctx: r2r::Context,
    name: &str,
    namespace: &str,
    initial: P,
    make: F,
) -> anyhow::Result<()>
where
    P: KitParams,
    C: Callbacks,
    F: FnOnce(&NodeContext<P>) -> anyhow::Result<C>,
{
    let served = ServedNode::start(&ctx, name, namespace, initial, make)?;
    shutdown_signal().await;
    served.stop().await;
    Ok(())
}

/// One lifecycle node served in this process: its parameters, lifecycle
/// and health. Several can share a process (and a context), which is how
/// nodes that pass frames avoid copying them.
pub struct ServedNode {
    pub fqn: String,
    params_task: tokio::task::JoinHandle<()>,
    health: Health,
    lifecycle: LifecycleHandle,
    running: RunningNode,
}

impl ServedNode {
    /// Starts node `name` in `namespace` with validated parameters `initial`.
    pub fn start<P, C, F>(
        ctx: &r2r::Context,
        name: &str,
        namespace: &str,
        initial: P,
        make: F,
    ) -> anyhow::Result<ServedNode>
    where
        P: KitParams,
        C: Callbacks,
        F: FnOnce(&NodeContext<P>) -> anyhow::Result<C>,
    {
        let fqn = format!("{}/{}", namespace.trim_end_matches('/'), name);
        let recovery = initial.recovery();
        let params = Params::new(initial);
        let running = RunningNode::start(ctx, name, namespace)?;
        let serve_params = {
            let mut n = running.node.lock();
            params.declare(&mut n)?
        };
        let params_task = tokio::spawn(serve_params);
        let gate = ActiveGate::default();
        let (faults, fault_rx) = Faults::channel(&gate);
        let node_ctx = NodeContext {
            node: running.node.clone(),
            fqn: fqn.clone(),
            params: params.clone(),
            gate,
            faults,
            counters: Counters::default(),
        };
        let callbacks = make(&node_ctx)?;
        let lifecycle = LifecycleHandle::serve_with(
            &running.node,
            &fqn,
            callbacks,
            node_ctx.gate.clone(),
            Some(fault_rx),
            recovery,
        )?;
        let p = params.clone();
        let health = Health::start(
            &running.node,
            &fqn,
            move || p.get().heartbeat_period(),
            lifecycle.state_reader(),
            node_ctx.counters.clone(),
        )?;
        tracing::info!(node = %fqn, "up, unconfigured");
        Ok(ServedNode {
            fqn,
            params_task,
            health,
            lifecycle,
            running,
        })
    }

    pub fn state(&self) -> crate::kit::lifecycle::State {
        self.lifecycle.state()
    }

    /// Requests a lifecycle transition (configure, activate, ...) in process.
    pub async fn change_state(&self, label: &str) -> bool {
        self.lifecycle.change_state(label).await
    }

    pub async fn stop(self) {
        self.health.stop().await;
        self.lifecycle.stop().await;
        self.params_task.abort();
        let _ = self.params_task.await;
        self.running.stop();
    }
}
