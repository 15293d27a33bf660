//! The `manager` node's r2r shell, in the style of nav2's lifecycle
//! manager: it brings the managed nodes up in order through their standard
//! lifecycle services and down in reverse, watches their heartbeats (the
//! core decides), recovers failed nodes (respawning their processes when a
//! [`Supervisor`] owns them; under `ros2 launch`, `respawn=True` does that),
//! and publishes `alerts`, `metrics` (CellMetrics), /diagnostics and a
//! Prometheus endpoint. Services (std_srvs/Trigger): `manager/startup`,
//! `manager/shutdown`, `manager/pause` (the scheduler stops assigning;
//! picks under way finish) and `manager/reset` (down, then up).
//!
//! The manager is not a lifecycle node itself (architecture.md).

use super::core::{Alert, Input, ManagerCore, NodeView, Output, Severity};
use super::metrics::{Kpis, MetricsCore, Sample};
use super::params::ManagerParams;
use super::prom::{render, MetricsServer};
use crate::kit::app::{stop_tasks, RunningNode};
use crate::kit::call::{call, call_hedged};
use crate::kit::lifecycle::State;
use crate::kit::params::Params;
use crate::kit::time::wall_now;
use crate::msgs::msg as m;
use futures::StreamExt;
use r2r::diagnostic_msgs::msg::{DiagnosticArray, DiagnosticStatus, KeyValue};
use r2r::lifecycle_msgs::srv::{ChangeState, GetState};
use r2r::std_srvs::srv::Trigger;
use r2r::QosProfile;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// An unanswered GetState is asked again this soon, the first request still
/// awaited (a node just started answers late while discovery completes, or
/// a respawned node's dead server took the request).
const GET_STATE_AGAIN: Duration = Duration::from_millis(200);
/// How long bring-up asks for a node's state before saying it has no answer
/// (and asking on, within bringup_timeout_s).
const UNANSWERED_WARN: Duration = Duration::from_secs(5);

/// How often the manager sweeps /dev/shm for what killed processes left
/// ([`crate::kit::shm`]) when no [`Supervisor`] of its own sees them exit.
const SHM_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// How often the manager looks for Fast DDS ports a killed process left
/// half made ([`crate::kit::shm::unstick_dead_ports`]): each hangs every
/// process that opens it until it is marked, so this bounds the hang.
const UNSTICK_PERIOD: Duration = Duration::from_secs(1);

/// Owns the managed nodes' processes, when the manager was started by our
/// own command (one process per node).
pub trait Supervisor: Send + Sync {
    /// Nodes whose processes have exited since the last call.
    fn exited(&self) -> Vec<String>;
    /// Starts `node`'s process again, killing it first if it still runs.
    /// Ok(false): this supervisor does not own that node.
    fn respawn(&self, node: &str) -> anyhow::Result<bool>;
}

/// lifecycle_msgs/Transition ids.
const CONFIGURE: u8 = 1;
const CLEANUP: u8 = 2;
const ACTIVATE: u8 = 3;
const DEACTIVATE: u8 = 4;

pub const ALERTS_TOPIC: &str = "alerts";
pub const METRICS_TOPIC: &str = "metrics";

fn state_of(id: u8) -> State {
    State::ALL
        .iter()
        .copied()
        .find(|s| s.id() == id)
        .unwrap_or(State::Unknown)
}

struct Lc {
    change: r2r::Client<ChangeState::Service>,
    get: r2r::Client<GetState::Service>,
    change_name: String,
    get_name: String,
}

struct Shared {
    params: ManagerParams,
    core: Mutex<ManagerCore>,
    metrics: Mutex<MetricsCore>,
    lcs: BTreeMap<String, Lc>,
    alerts: Mutex<r2r::Publisher<m::Alert>>,
    supervisor: Option<Arc<dyn Supervisor>>,
    started: Instant,
    /// Startup and shutdown take the whole cell (write); recoveries take
    /// it shared, plus their own node's lock, so that one node's slow
    /// recovery (a CNC homing) never holds up another's (a state manager
    /// to respawn).
    ops: tokio::sync::RwLock<()>,
    node_ops: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    fqn: String,
}

impl Shared {
    fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn step(self: &Arc<Self>, input: Input) {
        let now = self.now_s();
        let outs = self
            .core
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step(now, input);
        for o in outs {
            match o {
                Output::Alert(a) => self.alert(&a),
                Output::Recover { node, respawn } => {
                    let s = self.clone();
                    tokio::spawn(async move {
                        let ok = s.recover(&node, respawn).await;
                        s.step(Input::Recovered { node, ok });
                    });
                }
                Output::Reactivate { node } => {
                    let s = self.clone();
                    tokio::spawn(async move {
                        let ok = s.reactivate(&node).await;
                        s.step(Input::Recovered { node, ok });
                    });
                }
            }
        }
    }

    fn alert(&self, a: &Alert) {
        match a.severity {
            Severity::Info => tracing::info!(node = %a.node, alert = a.name, "{}", a.message),
            Severity::Warning => tracing::warn!(node = %a.node, alert = a.name, "{}", a.message),
            _ => tracing::error!(node = %a.node, alert = a.name, "{}", a.message),
        }
        let msg = m::Alert {
            severity: a.severity as u8,
            name: a.name.to_string(),
            message: a.message.clone(),
            node: if a.node.is_empty() {
                self.fqn.clone()
            } else {
                format!("/cell/{}", a.node)
            },
            stamp: wall_now(),
            ..Default::default()
        };
        if let Err(e) = self
            .alerts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .publish(&msg)
        {
            tracing::warn!("publishing an alert: {e}");
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.params.transition_timeout_s)
    }

    async fn get_state(&self, node: &str, timeout: Duration) -> anyhow::Result<State> {
        let lc = self
            .lcs
            .get(node)
            .ok_or_else(|| anyhow::anyhow!("{node}: not a managed node"))?;
        let r = call_hedged(
            &lc.get,
            &lc.get_name,
            &GetState::Request::default(),
            timeout,
            GET_STATE_AGAIN,
        )
        .await?;
        Ok(state_of(r.current_state.id))
    }

    async fn transition(&self, node: &str, id: u8) -> anyhow::Result<()> {
        let lc = self
            .lcs
            .get(node)
            .ok_or_else(|| anyhow::anyhow!("{node}: not a managed node"))?;
        let mut req = ChangeState::Request::default();
        req.transition.id = id;
        let r = call(&lc.change, &lc.change_name, &req, self.timeout()).await?;
        anyhow::ensure!(r.success, "{node}: transition {id} refused or failed");
        Ok(())
    }

    /// Brings `node` to Active from whatever primary state it is in,
    /// waiting up to bringup_timeout_s for it to appear or to settle.
    async fn bring_up(&self, node: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs_f64(self.params.bringup_timeout_s);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(
                !left.is_zero(),
                "{node}: not active within bringup_timeout_s ({} s)",
                self.params.bringup_timeout_s
            );
            // Hedged, over all the time left: a respawned node's old server
            // may still be matched (its participant's lease has not run
            // out) and never answer, and a new one answers only once
            // discovery has matched its reply to us (2–3 s after its start
            // here, all at once): asked again every 0.2 s, the first answer
            // to any request is taken.
            // Asked in slices of at most UNANSWERED_WARN, each unanswered
            // one logged: a node that never answers shows in the log long
            // before bringup_timeout_s.
            let state = match self.get_state(node, left.min(UNANSWERED_WARN)).await {
                Ok(s) => s,
                Err(e) => {
                    // Not there yet (starting, or respawning): ask again
                    // shortly, within the same deadline.
                    if left >= UNANSWERED_WARN {
                        tracing::warn!(
                            node,
                            "no answer to get_state for {} s ({:.0} s left): {e:#}",
                            UNANSWERED_WARN.as_secs(),
                            (left - UNANSWERED_WARN).as_secs_f64()
                        );
                    } else {
                        tracing::debug!("{node}: {e:#}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match state {
                State::Active => return Ok(()),
                State::Unconfigured => self.transition(node, CONFIGURE).await?,
                State::Inactive => self.transition(node, ACTIVATE).await?,
                State::Finalized => anyhow::bail!("{node}: finalized; it must be restarted"),
                // A transition or the node's own recovery is under way.
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Takes `node` down to Unconfigured (deactivate, clean up).
    async fn bring_down(&self, node: &str) -> anyhow::Result<()> {
        match self.get_state(node, Duration::from_secs(2)).await? {
            State::Active => {
                self.transition(node, DEACTIVATE).await?;
                self.transition(node, CLEANUP).await
            }
            State::Inactive => self.transition(node, CLEANUP).await,
            _ => Ok(()),
        }
    }

    /// The lock one node's recoveries take (with the shared cell lock).
    fn node_lock(&self, node: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.node_ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node.to_string())
            .or_default()
            .clone()
    }

    async fn recover(&self, node: &str, respawn: bool) -> bool {
        let _cell = self.ops.read().await;
        let lock = self.node_lock(node);
        let _ops = lock.lock().await;
        if respawn {
            if let Some(sup) = &self.supervisor {
                match sup.respawn(node) {
                    Ok(true) => tracing::info!(node, "process restarted"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(node, "restarting its process: {e:#}");
                        return false;
                    }
                }
            }
        }
        match self.bring_up(node).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(node, "recovery: {e:#}");
                false
            }
        }
    }

    async fn reactivate(&self, node: &str) -> bool {
        let _cell = self.ops.read().await;
        let lock = self.node_lock(node);
        let _ops = lock.lock().await;
        let r = match self.get_state(node, Duration::from_secs(2)).await {
            Ok(State::Active) => self.transition(node, DEACTIVATE).await,
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::warn!(node, "re-activating: {e:#}");
        }
        match self.bring_up(node).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(node, "re-activating: {e:#}");
                false
            }
        }
    }

    async fn startup(self: &Arc<Self>) -> anyhow::Result<()> {
        let _ops = self.ops.write().await;
        for node in &self.params.node_names {
            self.bring_up(node).await?;
            self.step(Input::Want {
                node: node.clone(),
                active: true,
            });
            tracing::info!(node = %node, "active");
        }
        Ok(())
    }

    async fn shutdown(self: &Arc<Self>, only: Option<&str>) -> anyhow::Result<()> {
        let _ops = self.ops.write().await;
        let mut first_err = None;
        for node in self.params.node_names.iter().rev() {
            if only.is_some_and(|o| o != node) {
                continue;
            }
            self.step(Input::Want {
                node: node.clone(),
                active: false,
            });
            let r = if only.is_some() {
                // Pause: deactivate only.
                match self.get_state(node, Duration::from_secs(2)).await {
                    Ok(State::Active) => self.transition(node, DEACTIVATE).await,
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            } else {
                self.bring_down(node).await
            };
            if let Err(e) = r {
                tracing::warn!(node = %node, "taking it down: {e:#}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn kpis(&self) -> Kpis {
        let now = self.now_s();
        self.metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kpis(now)
    }

    fn sample(&self, s: Sample) {
        let now = self.now_s();
        self.metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(now, s);
    }
}

/// The manager, running.
pub struct Manager {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    server: Option<MetricsServer>,
    running: Option<RunningNode>,
}

impl Manager {
    /// Starts the manager node `manager` in `/cell` on `ctx`. It does not
    /// bring the cell up: call [`Manager::startup`] (the `manager` executable
    /// does when `autostart` is set).
    pub fn start(
        ctx: &r2r::Context,
        params: ManagerParams,
        supervisor: Option<Arc<dyn Supervisor>>,
    ) -> anyhow::Result<Manager> {
        let running = RunningNode::start(ctx, "manager", "/cell")?;
        let fqn = "/cell/manager".to_string();
        let declared = Params::new(params.clone());
        let mut tasks = Vec::new();
        let (
            mut beats,
            mut events,
            mut picks,
            mut tracks,
            mut diags,
            statuses,
            alerts,
            metrics,
            diag_pub,
            services,
            lcs,
            mut issuer_events,
            mut heard_alerts,
        ) = {
            let mut n = running.node.lock();
            tasks.push(tokio::spawn(declared.declare(&mut n)?));
            let reliable = QosProfile::default().reliable().keep_last(100);
            let statuses = params
                .cnc_ids
                .iter()
                .map(|id| {
                    n.subscribe::<m::CncStatus>(&format!("cnc_{id}/status"), QosProfile::default())
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut lcs = BTreeMap::new();
            for node in &params.node_names {
                let change_name = format!("/cell/{node}/change_state");
                let get_name = format!("/cell/{node}/get_state");
                lcs.insert(
                    node.clone(),
                    Lc {
                        change: n.create_client::<ChangeState::Service>(
                            &change_name,
                            QosProfile::services_default(),
                        )?,
                        get: n.create_client::<GetState::Service>(
                            &get_name,
                            QosProfile::services_default(),
                        )?,
                        change_name,
                        get_name,
                    },
                );
            }
            let services = ["startup", "shutdown", "pause", "reset"]
                .iter()
                .map(|s| {
                    n.create_service::<Trigger::Service>(
                        &format!("manager/{s}"),
                        QosProfile::services_default(),
                    )
                    .map(|srv| (*s, srv))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (
                n.subscribe::<m::Heartbeat>(
                    crate::kit::health::HEARTBEAT_TOPIC,
                    QosProfile::default(),
                )?,
                n.subscribe::<m::ObjectEvent>("objects/events", crate::kit::qos::events())?,
                n.subscribe::<m::PickResult>("pick_results", reliable.clone())?,
                n.subscribe::<m::TrackArray>("tracks", QosProfile::default())?,
                n.subscribe::<DiagnosticArray>(
                    crate::kit::health::DIAGNOSTICS_TOPIC,
                    QosProfile::default(),
                )?,
                statuses,
                n.create_publisher::<m::Alert>(ALERTS_TOPIC, reliable.clone())?,
                n.create_publisher::<m::CellMetrics>(METRICS_TOPIC, QosProfile::default())?,
                n.create_publisher::<DiagnosticArray>(
                    crate::kit::health::DIAGNOSTICS_TOPIC,
                    QosProfile::default(),
                )?,
                services,
                lcs,
                n.subscribe::<r2r::lifecycle_msgs::msg::TransitionEvent>(
                    &format!(
                        "/cell/{}/transition_event",
                        params.core_config().epoch_issuer
                    ),
                    QosProfile::default().reliable().keep_last(10),
                )?,
                n.subscribe::<m::Alert>(ALERTS_TOPIC, reliable.clone())?,
            )
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(ManagerCore::new(params.core_config(), &params.node_names)),
            metrics: Mutex::new(MetricsCore::new(params.metrics_config())),
            lcs,
            alerts: Mutex::new(alerts),
            supervisor,
            started: Instant::now(),
            ops: tokio::sync::RwLock::new(()),
            node_ops: Mutex::default(),
            fqn,
            params: params.clone(),
        });
        let server = if params.metrics_bind.is_empty() {
            None
        } else {
            Some(MetricsServer::start(&params.metrics_bind)?)
        };

        // The epoch issuer's activations.
        {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(ev) = issuer_events.next().await {
                    if ev.goal_state.id == State::Active.id() {
                        s.step(Input::Activated {
                            node: s.params.core_config().epoch_issuer,
                        });
                    }
                }
            }));
        }
        // CNCs the scheduler finds in a refused epoch (the issuer's
        // activation went unheard): re-activated like those it fences.
        {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(a) = heard_alerts.next().await {
                    if a.name == crate::sched::node::EPOCH_STALE_ALERT {
                        let node = a.node.rsplit('/').next().unwrap_or("").to_string();
                        s.step(Input::EpochStale { node });
                    }
                }
            }));
        }
        // Heartbeats.
        {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(hb) = beats.next().await {
                    let node = hb.node.rsplit('/').next().unwrap_or("").to_string();
                    s.step(Input::Beat {
                        node,
                        state: state_of(hb.state),
                    });
                }
            }));
        }
        // The watch: ticks, and processes that exited.
        {
            let s = shared.clone();
            let period = Duration::from_secs_f64(params.tick_period_s);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut next_sweep = Instant::now();
                let mut next_unstick = Instant::now();
                loop {
                    tick.tick().await;
                    // A port a killed process left half made would hang
                    // every process that opens it, this one too
                    // (kit/shm.rs), whoever restarts the processes.
                    if Instant::now() >= next_unstick {
                        next_unstick = Instant::now() + UNSTICK_PERIOD;
                        let marked = crate::kit::shm::unstick_dead_ports();
                        if !marked.is_empty() {
                            s.alert(&Alert {
                                severity: Severity::Error,
                                name: "dds_port_unstuck",
                                node: String::new(),
                                message: format!(
                                    "{}: Fast DDS ports left half made by a killed process, on which every process that opens them would wait forever: marked corrupted: {}",
                                    crate::kit::shm::SHM_DIR,
                                    marked.join(" ")
                                ),
                            });
                        }
                    }
                    if let Some(sup) = &s.supervisor {
                        for node in sup.exited() {
                            s.step(Input::Exited { node });
                        }
                    } else if Instant::now() >= next_sweep {
                        // Another supervisor (ros2 launch) restarts the
                        // processes and sweeps nothing: what a killed one
                        // left in /dev/shm goes within a minute.
                        next_sweep += SHM_SWEEP_PERIOD;
                        crate::kit::shm::sweep_dead("manager");
                    }
                    s.step(Input::Tick);
                }
            }));
        }
        // What the KPIs are made of.
        {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(e) = events.next().await {
                    if let Ok(object) = <[u8; 16]>::try_from(e.object_id.uuid.as_slice()) {
                        s.sample(Sample::Event {
                            object,
                            from: e.from_state.id,
                            to: e.to_state.id,
                            cnc: e.cnc_id,
                        });
                    }
                }
            }));
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(p) = picks.next().await {
                    s.sample(Sample::Pick {
                        cnc: p.cnc_id,
                        outcome: p.outcome.value,
                        cycle_time_s: p.cycle_time_s,
                    });
                }
            }));
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(t) = tracks.next().await {
                    let objects = t
                        .tracks
                        .iter()
                        .filter_map(|t| {
                            <[u8; 16]>::try_from(t.object_id.uuid.as_slice())
                                .ok()
                                .map(|o| (o, t.lane))
                        })
                        .collect();
                    s.sample(Sample::Tracks { objects });
                }
            }));
            for mut st in statuses {
                let s = shared.clone();
                tasks.push(tokio::spawn(async move {
                    while let Some(c) = st.next().await {
                        s.sample(Sample::Status {
                            cnc: c.cnc_id,
                            busy: c.busy,
                            queue_depth: c.queue_depth,
                        });
                    }
                }));
            }
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(d) = diags.next().await {
                    for st in d.status {
                        let node = st.name.rsplit('/').next().unwrap_or("").to_string();
                        if !s.lcs.contains_key(&node) {
                            continue;
                        }
                        let get = |k: &str| {
                            st.values
                                .iter()
                                .find(|v| v.key == k)
                                .and_then(|v| v.value.parse::<u64>().ok())
                        };
                        s.sample(Sample::Node {
                            messages: get(crate::kit::health::MESSAGES).unwrap_or(0),
                            errors: get(crate::kit::health::ERRORS).unwrap_or(0),
                            queue_depth: get(crate::kit::health::QUEUE_DEPTH).unwrap_or(0),
                            latency_s: get(crate::kit::health::LATENCY_US)
                                .map(|us| us as f64 * 1e-6),
                            node,
                        });
                    }
                }
            }));
        }
        // KPIs out: CellMetrics, /metrics, /diagnostics, the miss-rate alert.
        {
            let s = shared.clone();
            let page = server.as_ref().map(|srv| srv.page());
            let period = Duration::from_secs_f64(params.metrics_period_s);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let k = s.kpis();
                    if let Some(page) = &page {
                        *page.lock().unwrap_or_else(|e| e.into_inner()) = render(&k);
                    }
                    if let Err(e) = metrics.publish(&cell_metrics(&k)) {
                        tracing::warn!("publishing metrics: {e}");
                    }
                    let alert = s
                        .metrics
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .miss_rate_alert(&k);
                    match alert {
                        Some(true) => s.alert(&Alert {
                            severity: Severity::Warning,
                            name: "high_miss_rate",
                            node: String::new(),
                            message: format!(
                                "miss rate {:.2} over the last {:.0} s (threshold {:.2})",
                                k.miss_rate, k.window_s, s.params.miss_rate_warning
                            ),
                        }),
                        Some(false) => s.alert(&Alert {
                            severity: Severity::Info,
                            name: "miss_rate_normal",
                            node: String::new(),
                            message: format!("miss rate back to {:.2}", k.miss_rate),
                        }),
                        None => {}
                    }
                    let view = s
                        .core
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .view(s.now_s());
                    if let Err(e) = diag_pub.publish(&diagnostics(&view)) {
                        tracing::warn!("publishing diagnostics: {e}");
                    }
                }
            }));
        }
        // Services.
        for (name, mut srv) in services {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(req) = srv.next().await {
                    let r = match name {
                        "startup" => s.startup().await,
                        "shutdown" => s.shutdown(None).await,
                        "pause" => s.shutdown(Some("scheduler")).await,
                        _ => match s.shutdown(None).await {
                            Ok(()) => s.startup().await,
                            Err(e) => Err(e),
                        },
                    };
                    let resp = Trigger::Response {
                        success: r.is_ok(),
                        message: match r {
                            Ok(()) => format!("{name}: done"),
                            Err(e) => format!("{name}: {e:#}"),
                        },
                    };
                    crate::kit::call::reply(req, &format!("manager/{name}"), resp);
                }
            }));
        }
        Ok(Manager {
            shared,
            tasks,
            server,
            running: Some(running),
        })
    }

    /// The port of the Prometheus endpoint, if any.
    pub fn metrics_port(&self) -> Option<u16> {
        self.server.as_ref().map(|s| s.port)
    }

    /// Brings the cell up in order; fails naming the node that did not come up.
    pub async fn startup(&self) -> anyhow::Result<()> {
        self.shared.startup().await
    }

    /// Takes the cell down in reverse order.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        self.shared.shutdown(None).await
    }

    pub fn kpis(&self) -> Kpis {
        self.shared.kpis()
    }

    pub fn nodes(&self) -> Vec<NodeView> {
        let now = self.shared.now_s();
        self.shared
            .core
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .view(now)
    }

    pub async fn stop(mut self) {
        stop_tasks(std::mem::take(&mut self.tasks)).await;
        self.server.take();
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

fn cell_metrics(k: &Kpis) -> m::CellMetrics {
    let mut msg = m::CellMetrics {
        window_s: k.window_s,
        objects_per_min: k.objects_per_min,
        pick_success_rate: k.pick_success_rate,
        avg_cycle_time_s: k.avg_cycle_time_s,
        miss_rate: k.miss_rate,
        ..Default::default()
    };
    msg.header.stamp = wall_now();
    msg.cncs = k
        .cncs
        .iter()
        .map(|c| m::CncMetrics {
            cnc_id: c.cnc_id.clone(),
            utilisation: c.utilisation,
            picks: c.picks,
            failures: c.failures,
            avg_cycle_time_s: c.avg_cycle_time_s,
        })
        .collect();
    msg.lanes = k
        .lanes
        .iter()
        .map(|l| m::LaneMetrics {
            lane: l.lane,
            throughput_per_min: l.throughput_per_min,
            miss_rate: l.miss_rate,
            congestion: l.congestion,
        })
        .collect();
    msg.nodes = k
        .nodes
        .iter()
        .map(|n| m::NodeMetrics {
            node: n.node.clone(),
            message_rate_hz: n.message_rate_hz,
            processing_latency_s: n.processing_latency_s,
            error_rate: n.error_rate,
            queue_depth: n.queue_depth,
        })
        .collect();
    msg
}

fn diagnostics(view: &[NodeView]) -> DiagnosticArray {
    let mut d = DiagnosticArray::default();
    d.header.stamp = wall_now();
    for v in view {
        let level = if v.breaker_open || v.recovering {
            DiagnosticStatus::ERROR as u8
        } else if v.want_active && v.state != State::Active {
            DiagnosticStatus::WARN as u8
        } else {
            DiagnosticStatus::OK as u8
        };
        let kv = |key: &str, value: String| KeyValue {
            key: key.into(),
            value,
        };
        d.status.push(DiagnosticStatus {
            level,
            name: format!("/cell/manager: {}", v.name),
            message: v.state.label().into(),
            hardware_id: String::new(),
            values: vec![
                kv(
                    "wanted",
                    if v.want_active { "active" } else { "any" }.into(),
                ),
                kv(
                    "silent_s",
                    v.silent_s
                        .map_or("never heard".into(), |s| format!("{s:.1}")),
                ),
                kv("restarts", v.restarts.to_string()),
                kv(
                    "breaker",
                    if v.breaker_open { "open" } else { "closed" }.into(),
                ),
            ],
        });
    }
    d
}

/// The `manager` executable's `main`: parameters from `--ros-args`, then
/// the manager until Ctrl-C or SIGTERM (bringing the cell up first when
/// `autostart` is set, and down at the end).
pub fn main() {
    use crate::kit::node::{fail, started};
    let params = started::<ManagerParams>("manager", "/cell").params;
    let r = crate::kit::app::run(|ctx| async move {
        let manager = Manager::start(&ctx, params.clone(), None)?;
        if params.autostart {
            if let Err(e) = manager.startup().await {
                tracing::error!("the cell did not come up: {e:#}");
            }
        }
        crate::kit::app::shutdown_signal().await;
        let _ = manager.shutdown().await;
        manager.stop().await;
        Ok(())
    });
    if let Err(e) = r {
        fail("manager", &format_args!("{e:#}"));
    }
}
