//! The r2r shell of the lifecycle: `<node>/change_state`, `get_state`,
//! `get_available_states`, `get_available_transitions`,
//! `get_transition_graph` and the `<node>/transition_event` topic.

use super::core::{Callback, CallbackResult, Request, State, StateMachine, Transition, GRAPH};
use crate::kit::call::reply;
use crate::kit::spin::SharedNode;
use futures::future::BoxFuture;
use futures::StreamExt;
use r2r::lifecycle_msgs::msg as lm;
use r2r::lifecycle_msgs::srv;
use r2r::QosProfile;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// Whose lines a transition logs, and how loudly: a recovery's failed
/// attempts between its loud ones ([`LOUD_EVERY`]) log at debug, so that a
/// device gone for a minute does not fill the log with the same lines.
#[derive(Clone, Copy)]
struct Voice<'a> {
    node: &'a str,
    quiet: bool,
}

impl<'a> Voice<'a> {
    fn loud(node: &'a str) -> Self {
        Voice { node, quiet: false }
    }
}

/// `tracing::$level!`, or `debug!` when the voice is quiet.
macro_rules! say {
    ($voice:expr, $level:ident, $($arg:tt)*) => {
        if $voice.quiet {
            tracing::debug!($($arg)*)
        } else {
            tracing::$level!($($arg)*)
        }
    };
}

/// A recovery logs its first failed attempt, every tenth, and its last at
/// their levels; the ones between at debug.
pub const LOUD_EVERY: u32 = 10;

/// What a lifecycle node supplies. Every callback defaults to success.
/// `on_error` runs in ErrorProcessing; success there returns the node to
/// Unconfigured, anything else finalizes it.
pub trait Callbacks: Send + 'static {
    fn on_configure(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async { CallbackResult::Success })
    }
    fn on_activate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async { CallbackResult::Success })
    }
    fn on_deactivate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async { CallbackResult::Success })
    }
    fn on_cleanup(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async { CallbackResult::Success })
    }
    fn on_shutdown(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async { CallbackResult::Success })
    }
    fn on_error(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async { CallbackResult::Success })
    }
}

/// The usual shape of a node's callbacks, so a node writes only its steps:
/// configure and activate may fail (the transition then fails with the
/// error's text); deactivate undoes activate; release undoes configure and
/// serves cleanup, shutdown and the way out of an error alike.
pub trait Steps: Send + 'static {
    fn configure(&mut self) -> anyhow::Result<()>;
    fn activate(&mut self) -> anyhow::Result<()>;
    fn deactivate(&mut self) -> anyhow::Result<()>;
    fn release(&mut self);
}

/// Runs a synchronous step where it cannot starve the node's other tasks:
/// on a multi-threaded runtime the worker is handed over first (a CNC's
/// configure waits through a 12 s homing cycle, and its heartbeats must go
/// on meanwhile); elsewhere (a single-threaded test runtime) in place.
fn blocking<R>(step: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(step)
        }
        _ => step(),
    }
}

impl<T: Steps> Callbacks for T {
    fn on_configure(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move { CallbackResult::from_result(blocking(|| Steps::configure(self))) })
    }
    fn on_activate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move { CallbackResult::from_result(blocking(|| Steps::activate(self))) })
    }
    fn on_deactivate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move { CallbackResult::from_result(blocking(|| Steps::deactivate(self))) })
    }
    fn on_cleanup(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            blocking(|| Steps::release(self));
            CallbackResult::Success
        })
    }
    fn on_shutdown(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            blocking(|| Steps::release(self));
            CallbackResult::Success
        })
    }
    fn on_error(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            blocking(|| Steps::release(self));
            CallbackResult::Success
        })
    }
}

/// Open while the node is Active; lifecycle publishers check it. It also
/// counts activations, so that a fault can be told from one of an earlier
/// activation.
#[derive(Clone, Default, Debug)]
pub struct ActiveGate(Arc<(AtomicBool, AtomicU64)>);

impl ActiveGate {
    pub fn is_open(&self) -> bool {
        self.0 .0.load(Ordering::Acquire)
    }
    /// How many times the node has been activated.
    pub fn activation(&self) -> u64 {
        self.0 .1.load(Ordering::Acquire)
    }
    /// A gate that is open from the start, for publishers of nodes without
    /// a lifecycle (tools, probes).
    pub fn always_open() -> Self {
        let g = ActiveGate::default();
        g.set(true);
        g
    }
    fn set(&self, open: bool) {
        if open {
            self.0 .1.fetch_add(1, Ordering::AcqRel);
        }
        self.0 .0.store(open, Ordering::Release)
    }
}

/// A publisher that publishes only while its node is Active (as rclcpp's
/// LifecyclePublisher): otherwise `publish` drops the message and says so.
pub struct LifecyclePublisher<T: r2r::WrappedTypesupport> {
    inner: r2r::Publisher<T>,
    gate: ActiveGate,
}

impl<T: r2r::WrappedTypesupport> Clone for LifecyclePublisher<T> {
    fn clone(&self) -> Self {
        LifecyclePublisher {
            inner: self.inner.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<T: r2r::WrappedTypesupport + 'static> LifecyclePublisher<T> {
    pub fn new(inner: r2r::Publisher<T>, gate: ActiveGate) -> Self {
        LifecyclePublisher { inner, gate }
    }

    /// Publishes if active; returns whether the message went out.
    pub fn publish(&self, msg: &T) -> Result<bool, r2r::Error> {
        if !self.gate.is_open() {
            return Ok(false);
        }
        self.inner.publish(msg)?;
        Ok(true)
    }
}

fn state_msg(s: State) -> lm::State {
    lm::State {
        id: s.id(),
        label: s.label().into(),
    }
}

fn description(t: &Transition) -> lm::TransitionDescription {
    lm::TransitionDescription {
        transition: lm::Transition {
            id: t.id,
            label: t.label.into(),
        },
        start_state: state_msg(t.start),
        goal_state: state_msg(t.goal),
    }
}

/// How a node reports a fault found while running (a camera unplugged, a
/// stream gone bad): the node leaves Active through ErrorProcessing, as if
/// its deactivate callback had raised the error, so its on_error callback
/// releases what it holds. Clone it into whatever finds the fault.
///
/// A fault belongs to the activation it was raised in: one raised while
/// the node was not Active, or handled only after the node has been
/// activated again (two reports of one incident, the second queued behind
/// the recovery from the first), is logged and ignored.
#[derive(Clone, Debug)]
pub struct Faults {
    tx: tokio::sync::mpsc::UnboundedSender<Fault>,
    gate: ActiveGate,
}

/// One reported fault.
#[derive(Debug)]
pub struct Fault {
    pub why: String,
    /// The activation it was raised in (None: raised while not Active).
    activation: Option<u64>,
    /// Whether the node may recover from it by itself.
    recover: bool,
}

pub type FaultReceiver = tokio::sync::mpsc::UnboundedReceiver<Fault>;

impl Faults {
    /// Faults of the node whose gate is `gate`.
    pub fn channel(gate: &ActiveGate) -> (Faults, FaultReceiver) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let gate = gate.clone();
        (Faults { tx, gate }, rx)
    }

    /// Reports a fault; `why` goes into the log and the error transition.
    pub fn raise(&self, why: impl Into<String>) {
        self.send(why.into(), true)
    }

    /// Reports a fault the node must not recover from by itself (an
    /// e-stop): it stays Unconfigured until someone configures it again.
    pub fn latch(&self, why: impl Into<String>) {
        self.send(why.into(), false)
    }

    fn send(&self, why: String, recover: bool) {
        let activation = self.gate.is_open().then(|| self.gate.activation());
        let _ = self.tx.send(Fault {
            why,
            activation,
            recover,
        });
    }
}

/// What a node does after a fault took it out of Active: nothing (the
/// manager or an operator decides), or configure and activate itself again
/// with backoff until it is back or the attempts run out.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Recovery {
    #[default]
    Stay,
    Reactivate(crate::kit::retry::RetryPolicy),
}

/// The running lifecycle services of one node.
pub struct LifecycleHandle {
    machine: Arc<Mutex<StateMachine>>,
    pub gate: ActiveGate,
    tasks: Vec<JoinHandle<()>>,
    change: ChangeFn,
}

/// Runs a transition by label in process, exactly as change_state would.
type ChangeFn = Arc<dyn Fn(String) -> BoxFuture<'static, bool> + Send + Sync>;

impl LifecycleHandle {
    pub fn state(&self) -> State {
        self.machine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
    }

    /// Requests the transition `label` (configure, activate, ...) from
    /// inside the process, as a change_state call would; returns its success.
    pub async fn change_state(&self, label: &str) -> bool {
        (self.change)(label.to_string()).await
    }

    /// A reader of the current state for other tasks (heartbeats, status).
    pub fn state_reader(&self) -> impl Fn() -> State + Send + Sync + 'static {
        let m = self.machine.clone();
        move || m.lock().unwrap_or_else(|e| e.into_inner()).state()
    }

    /// Serves the lifecycle of `node` (fully qualified name `fqn`), running
    /// `callbacks` on each transition.
    pub fn serve<C: Callbacks>(node: &SharedNode, fqn: &str, callbacks: C) -> anyhow::Result<Self> {
        Self::serve_with_gate(node, fqn, callbacks, ActiveGate::default())
    }

    /// As [`LifecycleHandle::serve`], opening `gate` while Active; give the
    /// same gate to the node's [`LifecyclePublisher`]s.
    pub fn serve_with_gate<C: Callbacks>(
        node: &SharedNode,
        fqn: &str,
        callbacks: C,
        gate: ActiveGate,
    ) -> anyhow::Result<Self> {
        Self::serve_with(node, fqn, callbacks, gate, None, Recovery::Stay)
    }

    /// As [`LifecycleHandle::serve_with_gate`], also taking faults from
    /// `faults` (see [`Faults`]) and recovering from them as `recovery` says.
    pub fn serve_with<C: Callbacks>(
        node: &SharedNode,
        fqn: &str,
        callbacks: C,
        gate: ActiveGate,
        faults: Option<FaultReceiver>,
        recovery: Recovery,
    ) -> anyhow::Result<Self> {
        let machine = Arc::new(Mutex::new(StateMachine::default()));
        let callbacks = Arc::new(tokio::sync::Mutex::new(callbacks));
        let mut n = node.lock();
        let qos = QosProfile::services_default();
        // r2r publishers are Send but not Sync; the Mutex lets the change_state
        // task lend it across awaits.
        // transient_local: a monitor that asks for it (transient_local
        // itself) hears the last transitions even if it matched late.
        let events = Mutex::new(
            n.create_publisher::<lm::TransitionEvent>(
                &format!("{fqn}/transition_event"),
                QosProfile::default()
                    .reliable()
                    .transient_local()
                    .keep_last(10),
            )?,
        );
        let events = Arc::new(events);
        let mut tasks = Vec::new();

        if let Some(mut faults) = faults {
            let (machine, gate, name) = (machine.clone(), gate.clone(), fqn.to_string());
            let (callbacks, events) = (callbacks.clone(), events.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(fault) = faults.recv().await {
                    on_fault(&name, &machine, &gate, &callbacks, &events, fault, recovery).await;
                }
            }));
        }

        let service = format!("{fqn}/change_state");
        let mut change = n.create_service::<srv::ChangeState::Service>(&service, qos.clone())?;
        {
            let (machine, gate, name) = (machine.clone(), gate.clone(), fqn.to_string());
            let (callbacks, events) = (callbacks.clone(), events.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(req) = change.next().await {
                    let request = Request {
                        id: req.message.transition.id,
                        label: req.message.transition.label.clone(),
                    };
                    // One transition at a time: a request arriving mid-transition is
                    // refused, as rcl refuses it outside a primary state.
                    let success = match callbacks.try_lock() {
                        Ok(mut cbs) => {
                            change_state(
                                Voice::loud(&name),
                                &machine,
                                &gate,
                                &mut *cbs,
                                &events,
                                &request,
                                None,
                            )
                            .await
                        }
                        Err(_) => {
                            tracing::warn!(
                                node = %name,
                                "change_state {:?} refused: a transition is in progress",
                                request
                            );
                            false
                        }
                    };
                    reply(req, &service, srv::ChangeState::Response { success });
                }
            }));
        }

        let service = format!("{fqn}/get_state");
        let mut get = n.create_service::<srv::GetState::Service>(&service, qos.clone())?;
        {
            let machine = machine.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(req) = get.next().await {
                    let s = machine.lock().unwrap_or_else(|e| e.into_inner()).state();
                    let current_state = state_msg(s);
                    reply(req, &service, srv::GetState::Response { current_state });
                }
            }));
        }

        let service = format!("{fqn}/get_available_states");
        let mut states =
            n.create_service::<srv::GetAvailableStates::Service>(&service, qos.clone())?;
        tasks.push(tokio::spawn(async move {
            while let Some(req) = states.next().await {
                let available_states = State::ALL.iter().map(|s| state_msg(*s)).collect();
                reply(
                    req,
                    &service,
                    srv::GetAvailableStates::Response { available_states },
                );
            }
        }));

        let service = format!("{fqn}/get_available_transitions");
        let mut available =
            n.create_service::<srv::GetAvailableTransitions::Service>(&service, qos.clone())?;
        {
            let machine = machine.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(req) = available.next().await {
                    let available_transitions = machine
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .available()
                        .map(description)
                        .collect();
                    let resp = srv::GetAvailableTransitions::Response {
                        available_transitions,
                    };
                    reply(req, &service, resp);
                }
            }));
        }

        let service = format!("{fqn}/get_transition_graph");
        let mut graph = n.create_service::<srv::GetAvailableTransitions::Service>(&service, qos)?;
        tasks.push(tokio::spawn(async move {
            while let Some(req) = graph.next().await {
                let available_transitions = GRAPH.iter().map(description).collect();
                let resp = srv::GetAvailableTransitions::Response {
                    available_transitions,
                };
                reply(req, &service, resp);
            }
        }));

        let change: ChangeFn = {
            let (machine, gate, name) = (machine.clone(), gate.clone(), fqn.to_string());
            Arc::new(move |label: String| {
                let (machine, gate, name) = (machine.clone(), gate.clone(), name.clone());
                let (callbacks, events) = (callbacks.clone(), events.clone());
                Box::pin(async move {
                    let request = Request { id: 0, label };
                    let mut cbs = callbacks.lock().await;
                    change_state(
                        Voice::loud(&name),
                        &machine,
                        &gate,
                        &mut *cbs,
                        &events,
                        &request,
                        None,
                    )
                    .await
                })
            })
        };
        Ok(LifecycleHandle {
            machine,
            gate,
            tasks,
            change,
        })
    }

    pub async fn stop(self) {
        crate::kit::app::stop_tasks(self.tasks).await;
    }
}

fn publish_event(pub_: &Mutex<r2r::Publisher<lm::TransitionEvent>>, node: &str, t: &Transition) {
    let ev = lm::TransitionEvent {
        timestamp: crate::kit::time::wall_now_ns(),
        transition: lm::Transition {
            id: t.id,
            label: t.label.into(),
        },
        start_state: state_msg(t.start),
        goal_state: state_msg(t.goal),
    };
    if let Err(e) = pub_.lock().unwrap_or_else(|e| e.into_inner()).publish(&ev) {
        tracing::warn!(node, "publishing transition_event: {e}");
    }
}

const CONFIGURE: u8 = 1;
const ACTIVATE: u8 = 3;
const DEACTIVATE: u8 = 4;

fn request(id: u8) -> Request {
    Request {
        id,
        label: String::new(),
    }
}

/// A fault reported while running: from Active, out through ErrorProcessing;
/// then, if asked, configure and activate again with backoff.
async fn on_fault<C: Callbacks>(
    node: &str,
    machine: &Mutex<StateMachine>,
    gate: &ActiveGate,
    callbacks: &tokio::sync::Mutex<C>,
    events: &Mutex<r2r::Publisher<lm::TransitionEvent>>,
    fault: Fault,
    recovery: Recovery,
) {
    let mut cbs = callbacks.lock().await;
    let state = machine.lock().unwrap_or_else(|e| e.into_inner()).state();
    let why = fault.why;
    if state != State::Active || fault.activation.is_none() {
        tracing::warn!(
            node,
            "fault raised while not Active (ignored; the node is {state}): {why}"
        );
        return;
    }
    if fault.activation != Some(gate.activation()) {
        tracing::warn!(
            node,
            "fault from an earlier activation (ignored: already handled): {why}"
        );
        return;
    }
    tracing::error!(node, "fault: {why}");
    let forced = CallbackResult::Error(why);
    change_state(
        Voice::loud(node),
        machine,
        gate,
        &mut *cbs,
        events,
        &request(DEACTIVATE),
        Some(forced),
    )
    .await;
    let Recovery::Reactivate(policy) = recovery else {
        return;
    };
    if !fault.recover {
        tracing::warn!(
            node,
            "not recovering by itself: configure it again to go on"
        );
        return;
    }
    let fault_at = tokio::time::Instant::now();
    for attempt in 1..=policy.max_attempts {
        let voice = Voice {
            node,
            quiet: attempt != 1 && attempt % LOUD_EVERY != 0 && attempt != policy.max_attempts,
        };
        let delay = policy.backoff.delay(attempt, 0.5);
        drop(cbs);
        tokio::time::sleep(delay).await;
        cbs = callbacks.lock().await;
        let state = machine.lock().unwrap_or_else(|e| e.into_inner()).state();
        let steps: &[u8] = match state {
            State::Unconfigured => &[CONFIGURE, ACTIVATE],
            State::Inactive => &[ACTIVATE],
            // Someone else moved it (activated, shut down): recovery is theirs.
            _ => return,
        };
        let mut ok = true;
        for &id in steps {
            ok = change_state(voice, machine, gate, &mut *cbs, events, &request(id), None).await;
            if !ok {
                break;
            }
        }
        if ok {
            tracing::info!(
                node,
                attempt,
                after_s = fault_at.elapsed().as_secs_f64(),
                "recovered from the fault: active again"
            );
            return;
        }
        say!(
            voice,
            warn,
            node,
            attempt,
            of = policy.max_attempts,
            "recovery attempt failed (only the first, every {LOUD_EVERY}th and the last are logged above debug)"
        );
    }
    tracing::error!(
        node,
        "recovery gave up after {} attempts",
        policy.max_attempts
    );
}

/// Runs one requested transition to its end. Returns change_state's
/// `success`: whether the requested transition's own callback succeeded.
/// `forced` stands in for the first callback's result (the callback is not
/// run): how a fault leaves Active.
async fn change_state<C: Callbacks>(
    voice: Voice<'_>,
    machine: &Mutex<StateMachine>,
    gate: &ActiveGate,
    cbs: &mut C,
    events: &Mutex<r2r::Publisher<lm::TransitionEvent>>,
    request: &Request,
    mut forced: Option<CallbackResult>,
) -> bool {
    let node = voice.node;
    let begun = machine
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .begin(request);
    let edge = match begun {
        Ok(edge) => edge,
        Err(refused) => {
            tracing::warn!(node, "{refused}");
            return false;
        }
    };
    if edge.start == State::Active {
        gate.set(false);
    }
    publish_event(events, node, &edge);
    let mut success = None;
    loop {
        let state = machine.lock().unwrap_or_else(|e| e.into_inner()).state();
        let Some(cb) = Callback::of(state) else { break };
        // Said before the callback too, so that one that never returns
        // (a hung configure) shows in the node's log.
        if forced.is_none() {
            say!(voice, info, node, "lifecycle: {state}");
        }
        let result = if let Some(r) = forced.take() {
            r
        } else {
            match cb {
                Callback::Configure => cbs.on_configure().await,
                Callback::Cleanup => cbs.on_cleanup().await,
                Callback::Activate => cbs.on_activate().await,
                Callback::Deactivate => cbs.on_deactivate().await,
                Callback::Shutdown => cbs.on_shutdown().await,
                Callback::Error => cbs.on_error().await,
            }
        };
        match &result {
            CallbackResult::Success => {}
            CallbackResult::Failure(why) => say!(voice, warn, node, "{state} failed: {why}"),
            CallbackResult::Error(why) => {
                say!(voice, error, node, "{state} raised an error: {why}")
            }
        }
        success.get_or_insert(result == CallbackResult::Success);
        let edge = machine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish(&result);
        if edge.goal == State::Active {
            gate.set(true);
        }
        publish_event(events, node, &edge);
        say!(
            voice,
            info,
            node,
            "lifecycle: {} -> {}",
            edge.start,
            edge.goal
        );
    }
    success.unwrap_or(false)
}
