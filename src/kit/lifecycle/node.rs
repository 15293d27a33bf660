//! The r2r shell of the lifecycle: `<node>/change_state`, `get_state`,
//! `get_available_states`, `get_available_transitions`,
//! `get_transition_graph` and the `<node>/transition_event` topic.

use super::core::{Callback, CallbackResult, Request, State, StateMachine, Transition, GRAPH};
use crate::kit::spin::SharedNode;
use futures::future::BoxFuture;
use futures::StreamExt;
use r2r::lifecycle_msgs::msg as lm;
use r2r::lifecycle_msgs::srv;
use r2r::QosProfile;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

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

/// Open while the node is Active; lifecycle publishers check it.
#[derive(Clone, Default, Debug)]
pub struct ActiveGate(Arc<AtomicBool>);

impl ActiveGate {
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
    fn set(&self, open: bool) {
        self.0.store(open, Ordering::Release)
    }
}

/// A publisher that publishes only while its node is Active (as rclcpp's
/// LifecyclePublisher): otherwise `publish` drops the message and says so.
pub struct LifecyclePublisher<T: r2r::WrappedTypesupport> {
    inner: r2r::Publisher<T>,
    gate: ActiveGate,
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

/// The running lifecycle services of one node.
pub struct LifecycleHandle {
    machine: Arc<Mutex<StateMachine>>,
    pub gate: ActiveGate,
    tasks: Vec<JoinHandle<()>>,
}

impl LifecycleHandle {
    pub fn state(&self) -> State {
        self.machine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
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
        let machine = Arc::new(Mutex::new(StateMachine::default()));
        let callbacks = Arc::new(tokio::sync::Mutex::new(callbacks));
        let mut n = node.lock().unwrap_or_else(|e| e.into_inner());
        let qos = QosProfile::services_default();
        // r2r publishers are Send but not Sync; the Mutex lets the change_state
        // task lend it across awaits.
        let events = Mutex::new(n.create_publisher::<lm::TransitionEvent>(
            &format!("{fqn}/transition_event"),
            QosProfile::default().reliable().keep_last(10),
        )?);
        let mut tasks = Vec::new();

        let mut change = n.create_service::<srv::ChangeState::Service>(
            &format!("{fqn}/change_state"),
            qos.clone(),
        )?;
        {
            let (machine, gate, name) = (machine.clone(), gate.clone(), fqn.to_string());
            tasks.push(tokio::spawn(async move {
                while let Some(req) = change.next().await {
                    let request = Request {
                        id: req.message.transition.id,
                        label: req.message.transition.label.clone(),
                    };
                    let success =
                        change_state(&name, &machine, &gate, &callbacks, &events, &request).await;
                    if let Err(e) = req.respond(srv::ChangeState::Response { success }) {
                        tracing::warn!(node = %name, "replying to change_state: {e}");
                    }
                }
            }));
        }

        let mut get =
            n.create_service::<srv::GetState::Service>(&format!("{fqn}/get_state"), qos.clone())?;
        {
            let machine = machine.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(req) = get.next().await {
                    let s = machine.lock().unwrap_or_else(|e| e.into_inner()).state();
                    let _ = req.respond(srv::GetState::Response {
                        current_state: state_msg(s),
                    });
                }
            }));
        }

        let mut states = n.create_service::<srv::GetAvailableStates::Service>(
            &format!("{fqn}/get_available_states"),
            qos.clone(),
        )?;
        tasks.push(tokio::spawn(async move {
            while let Some(req) = states.next().await {
                let _ = req.respond(srv::GetAvailableStates::Response {
                    available_states: State::ALL.iter().map(|s| state_msg(*s)).collect(),
                });
            }
        }));

        let mut available = n.create_service::<srv::GetAvailableTransitions::Service>(
            &format!("{fqn}/get_available_transitions"),
            qos.clone(),
        )?;
        {
            let machine = machine.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(req) = available.next().await {
                    let list = machine
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .available()
                        .map(description)
                        .collect();
                    let _ = req.respond(srv::GetAvailableTransitions::Response {
                        available_transitions: list,
                    });
                }
            }));
        }

        let mut graph = n.create_service::<srv::GetAvailableTransitions::Service>(
            &format!("{fqn}/get_transition_graph"),
            qos,
        )?;
        tasks.push(tokio::spawn(async move {
            while let Some(req) = graph.next().await {
                let _ = req.respond(srv::GetAvailableTransitions::Response {
                    available_transitions: GRAPH.iter().map(description).collect(),
                });
            }
        }));

        Ok(LifecycleHandle {
            machine,
            gate,
            tasks,
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

/// Runs one requested transition to its end. Returns change_state's
/// `success`: whether the requested transition's own callback succeeded.
async fn change_state<C: Callbacks>(
    node: &str,
    machine: &Mutex<StateMachine>,
    gate: &ActiveGate,
    callbacks: &tokio::sync::Mutex<C>,
    events: &Mutex<r2r::Publisher<lm::TransitionEvent>>,
    request: &Request,
) -> bool {
    // One transition at a time: a request arriving mid-transition is refused,
    // as rcl refuses it outside a primary state.
    let Ok(mut cbs) = callbacks.try_lock() else {
        tracing::warn!(
            node,
            "change_state {:?} refused: a transition is in progress",
            request
        );
        return false;
    };
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
        let result = match cb {
            Callback::Configure => cbs.on_configure().await,
            Callback::Cleanup => cbs.on_cleanup().await,
            Callback::Activate => cbs.on_activate().await,
            Callback::Deactivate => cbs.on_deactivate().await,
            Callback::Shutdown => cbs.on_shutdown().await,
            Callback::Error => cbs.on_error().await,
        };
        match &result {
            CallbackResult::Success => {}
            CallbackResult::Failure(why) => tracing::warn!(node, "{state} failed: {why}"),
            CallbackResult::Error(why) => tracing::error!(node, "{state} raised an error: {why}"),
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
        tracing::info!(node, "lifecycle: {} -> {}", edge.start, edge.goal);
    }
    success.unwrap_or(false)
}
