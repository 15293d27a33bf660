//! The ROS 2 node lifecycle state machine (design.ros2.org/articles/node_lifecycle),
//! with the ids and labels of lifecycle_msgs and rcl_lifecycle's default
//! graph. Pure: the shell begins a transition, runs the node's callback,
//! then finishes the transition with the callback's result.

use std::fmt;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Unknown,
    Unconfigured,
    Inactive,
    Active,
    Finalized,
    Configuring,
    CleaningUp,
    ShuttingDown,
    Activating,
    Deactivating,
    ErrorProcessing,
}

impl State {
    pub const ALL: [State; 11] = [
        State::Unknown,
        State::Unconfigured,
        State::Inactive,
        State::Active,
        State::Finalized,
        State::Configuring,
        State::CleaningUp,
        State::ShuttingDown,
        State::Activating,
        State::Deactivating,
        State::ErrorProcessing,
    ];

    /// The lifecycle_msgs/State id.
    pub fn id(self) -> u8 {
        match self {
            State::Unknown => 0,
            State::Unconfigured => 1,
            State::Inactive => 2,
            State::Active => 3,
            State::Finalized => 4,
            State::Configuring => 10,
            State::CleaningUp => 11,
            State::ShuttingDown => 12,
            State::Activating => 13,
            State::Deactivating => 14,
            State::ErrorProcessing => 15,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Unconfigured => "unconfigured",
            State::Inactive => "inactive",
            State::Active => "active",
            State::Finalized => "finalized",
            State::Configuring => "configuring",
            State::CleaningUp => "cleaningup",
            State::ShuttingDown => "shuttingdown",
            State::Activating => "activating",
            State::Deactivating => "deactivating",
            State::ErrorProcessing => "errorprocessing",
        }
    }

    pub fn is_primary(self) -> bool {
        self.id() < 10
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One edge of the graph, as lifecycle_msgs/TransitionDescription has it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub id: u8,
    pub label: &'static str,
    pub start: State,
    pub goal: State,
}

const fn t(id: u8, label: &'static str, start: State, goal: State) -> Transition {
    Transition {
        id,
        label,
        start,
        goal,
    }
}

use State::*;

/// rcl_lifecycle's default transition graph, in its order.
pub const GRAPH: [Transition; 25] = [
    t(1, "configure", Unconfigured, Configuring),
    t(10, "transition_success", Configuring, Inactive),
    t(11, "transition_failure", Configuring, Unconfigured),
    t(12, "transition_error", Configuring, ErrorProcessing),
    t(2, "cleanup", Inactive, CleaningUp),
    t(20, "transition_success", CleaningUp, Unconfigured),
    t(21, "transition_failure", CleaningUp, Inactive),
    t(22, "transition_error", CleaningUp, ErrorProcessing),
    t(3, "activate", Inactive, Activating),
    t(30, "transition_success", Activating, Active),
    t(31, "transition_failure", Activating, Inactive),
    t(32, "transition_error", Activating, ErrorProcessing),
    t(4, "deactivate", Active, Deactivating),
    t(40, "transition_success", Deactivating, Inactive),
    t(41, "transition_failure", Deactivating, Active),
    t(42, "transition_error", Deactivating, ErrorProcessing),
    t(5, "shutdown", Unconfigured, ShuttingDown),
    t(6, "shutdown", Inactive, ShuttingDown),
    t(7, "shutdown", Active, ShuttingDown),
    t(50, "transition_success", ShuttingDown, Finalized),
    t(51, "transition_failure", ShuttingDown, Finalized),
    t(52, "transition_error", ShuttingDown, ErrorProcessing),
    t(60, "transition_success", ErrorProcessing, Unconfigured),
    t(61, "transition_failure", ErrorProcessing, Finalized),
    t(62, "transition_error", ErrorProcessing, Finalized),
];

/// What a node's transition callback returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallbackResult {
    Success,
    /// The transition did not happen; the node stays where it was.
    Failure(String),
    /// Something broke: the node goes through ErrorProcessing.
    Error(String),
}

impl CallbackResult {
    /// Success, or the error (with its causes) raised as a transition error.
    pub fn from_result(r: anyhow::Result<()>) -> Self {
        match r {
            Ok(()) => CallbackResult::Success,
            Err(e) => CallbackResult::Error(format!("{e:#}")),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            CallbackResult::Success => "transition_success",
            CallbackResult::Failure(_) => "transition_failure",
            CallbackResult::Error(_) => "transition_error",
        }
    }
}

/// Which callback a transition state runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Callback {
    Configure,
    Cleanup,
    Activate,
    Deactivate,
    Shutdown,
    Error,
}

impl Callback {
    pub fn of(state: State) -> Option<Callback> {
        match state {
            Configuring => Some(Callback::Configure),
            CleaningUp => Some(Callback::Cleanup),
            Activating => Some(Callback::Activate),
            Deactivating => Some(Callback::Deactivate),
            ShuttingDown => Some(Callback::Shutdown),
            ErrorProcessing => Some(Callback::Error),
            _ => None,
        }
    }
}

/// A change_state request: by id, or by label when the id is 0 (as rcl does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u8,
    pub label: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub state: State,
    pub request: Request,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transition {} ({:?}) is not available in state {}",
            self.request.id, self.request.label, self.state
        )
    }
}

#[derive(Debug, Clone)]
pub struct StateMachine {
    state: State,
}

impl Default for StateMachine {
    fn default() -> Self {
        StateMachine {
            state: Unconfigured,
        }
    }
}

impl StateMachine {
    pub fn state(&self) -> State {
        self.state
    }

    /// The transitions that can be requested now (rcl's get_available_transitions).
    pub fn available(&self) -> impl Iterator<Item = &'static Transition> + '_ {
        GRAPH.iter().filter(move |t| t.start == self.state)
    }

    /// Starts a requested transition; only primary states accept requests.
    /// Returns the edge taken; the node is then in a transition state whose
    /// callback the shell must run and pass to [`StateMachine::finish`].
    pub fn begin(&mut self, req: &Request) -> Result<Transition, Refused> {
        let found = self.state.is_primary().then(|| {
            self.available().find(|t| {
                if req.id != 0 {
                    t.id == req.id
                } else {
                    t.label == req.label
                }
            })
        });
        match found.flatten() {
            Some(t) => {
                self.state = t.goal;
                Ok(*t)
            }
            None => Err(Refused {
                state: self.state,
                request: req.clone(),
            }),
        }
    }

    /// Ends the current transition state with the callback's result.
    /// If it lands in ErrorProcessing, the shell runs on_error and calls
    /// finish again.
    pub fn finish(&mut self, result: &CallbackResult) -> Transition {
        let label = result.label();
        let edge = GRAPH
            .iter()
            .find(|t| t.start == self.state && t.label == label)
            .copied()
            .unwrap_or_else(|| {
                // finish() outside a transition state is a shell bug; keep
                // the state and report a no-op edge rather than panic.
                t(0, "none", self.state, self.state)
            });
        self.state = edge.goal;
        edge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_label(l: &str) -> Request {
        Request {
            id: 0,
            label: l.into(),
        }
    }

    fn by_id(id: u8) -> Request {
        Request {
            id,
            label: String::new(),
        }
    }

    #[test]
    fn the_full_happy_path_visits_the_documented_states() {
        let mut sm = StateMachine::default();
        let mut seen = vec![sm.state()];
        for req in ["configure", "activate", "deactivate", "cleanup", "shutdown"] {
            let e = sm.begin(&by_label(req)).unwrap();
            seen.push(e.goal);
            seen.push(sm.finish(&CallbackResult::Success).goal);
        }
        assert_eq!(
            seen,
            vec![
                Unconfigured,
                Configuring,
                Inactive,
                Activating,
                Active,
                Deactivating,
                Inactive,
                CleaningUp,
                Unconfigured,
                ShuttingDown,
                Finalized
            ]
        );
    }

    #[test]
    fn a_transition_not_available_in_the_state_is_refused_and_nothing_changes() {
        let mut sm = StateMachine::default();
        let r = sm.begin(&by_label("activate")).unwrap_err();
        assert_eq!(r.state, Unconfigured);
        assert_eq!(sm.state(), Unconfigured);
        // Internal edges cannot be requested from outside.
        assert!(sm.begin(&by_id(10)).is_err());
        assert!(sm.begin(&by_id(99)).is_err());
    }

    #[test]
    fn a_request_by_id_picks_the_shutdown_edge_of_the_current_state() {
        let mut sm = StateMachine::default();
        assert!(sm.begin(&by_id(6)).is_err(), "6 is shutdown from inactive");
        let e = sm.begin(&by_id(5)).unwrap();
        assert_eq!((e.label, e.goal), ("shutdown", ShuttingDown));
    }

    #[test]
    fn a_failing_callback_returns_to_the_previous_primary_state() {
        let mut sm = StateMachine::default();
        sm.begin(&by_label("configure")).unwrap();
        let e = sm.finish(&CallbackResult::Failure("port busy".into()));
        assert_eq!((e.id, e.goal), (11, Unconfigured));
    }

    #[test]
    fn an_erroring_callback_goes_through_errorprocessing_to_unconfigured() {
        let mut sm = StateMachine::default();
        sm.begin(&by_label("configure")).unwrap();
        sm.finish(&CallbackResult::Success);
        sm.begin(&by_label("activate")).unwrap();
        let e = sm.finish(&CallbackResult::Error("serial timeout".into()));
        assert_eq!((e.id, e.goal), (32, ErrorProcessing));
        assert_eq!(Callback::of(sm.state()), Some(Callback::Error));
        let e = sm.finish(&CallbackResult::Success);
        assert_eq!((e.id, e.goal), (60, Unconfigured));
    }

    #[test]
    fn a_failing_error_handler_finalizes_the_node() {
        let mut sm = StateMachine::default();
        sm.begin(&by_label("configure")).unwrap();
        sm.finish(&CallbackResult::Error("x".into()));
        let e = sm.finish(&CallbackResult::Failure("y".into()));
        assert_eq!((e.id, e.goal), (61, Finalized));
        assert_eq!(sm.available().count(), 0);
    }

    #[test]
    fn requests_are_refused_while_in_a_transition_state() {
        let mut sm = StateMachine::default();
        sm.begin(&by_label("configure")).unwrap();
        assert!(sm.begin(&by_label("configure")).is_err());
    }
}
