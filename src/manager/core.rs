//! The manager's pure core: it watches every managed node's heartbeats and
//! lifecycle state and decides when to raise an alert and when to recover a
//! node (respawn its process, or configure and activate it again), with one
//! circuit breaker per node. Time is passed in (seconds on any clock).
//!
//! The rules, from architecture.md and the seed:
//! - a node silent for `agent_heartbeat_s`: a warning;
//! - silent for `critical_s`, or its process gone: critical, and a restart;
//! - alive but not in the state the cell wants for `recover_grace_s` (a
//!   node's own reconnects get that long): a warning, and a reconfigure;
//! - a recovery that fails counts against the node's breaker; an open
//!   breaker stops recoveries for `breaker_open_s` and is critical;
//! - every activation of the epoch issuer (the state manager) raises every
//!   CNC's epoch, fencing off what the CNCs had in flight: each active
//!   epoch holder (cnc_<id>) is then re-activated, so it begins a new
//!   epoch and can work again (architecture.md, "Epochs").
//!   So is one the scheduler reports still Active in a refused epoch
//!   (`cnc_epoch_stale`): the issuer's activation went unheard.

use crate::kit::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::kit::lifecycle::State;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub agent_heartbeat_s: f64,
    pub critical_s: f64,
    pub recover_grace_s: f64,
    pub breaker_failures: u32,
    pub breaker_open_s: f64,
    /// The node whose activation raises the holders' epochs.
    pub epoch_issuer: String,
    /// The nodes that hold an epoch from it.
    pub epoch_holders: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            agent_heartbeat_s: 3.0,
            critical_s: 10.0,
            recover_grace_s: 5.0,
            breaker_failures: 3,
            breaker_open_s: 60.0,
            epoch_issuer: "state_manager".into(),
            epoch_holders: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info = 0,
    Warning = 1,
    Error = 2,
    Critical = 3,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub severity: Severity,
    /// Stable machine-readable name, e.g. `node_silent`.
    pub name: &'static str,
    /// The node it concerns (empty for the cell).
    pub node: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A heartbeat from `node` (its short name), in lifecycle state `state`.
    Beat {
        node: String,
        state: State,
    },
    /// The process serving `node` has exited (only for processes we own).
    Exited {
        node: String,
    },
    /// The recovery of `node` that the core asked for has ended.
    Recovered {
        node: String,
        ok: bool,
    },
    /// `node` went through a transition to Active (its transition_event).
    Activated {
        node: String,
    },
    /// The scheduler found epoch holder `node` still Active in an epoch
    /// the issuer refuses (its `cnc_epoch_stale` alert): its re-activation
    /// for the issuer's last activation was missed.
    EpochStale {
        node: String,
    },
    /// The cell should (true) or need not (false) have `node` Active:
    /// startup and resume want it; shutdown and pause do not.
    Want {
        node: String,
        active: bool,
    },
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Alert(Alert),
    /// Bring `node` back to Active; `respawn`: restart its process first.
    Recover {
        node: String,
        respawn: bool,
    },
    /// Deactivate and activate `node` (it begins a new epoch); answered
    /// with [`Input::Recovered`].
    Reactivate {
        node: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Silence {
    Fine,
    Warned,
    Critical,
}

#[derive(Debug)]
struct Watched {
    name: String,
    want_active: bool,
    /// When we started wanting it (a node is not silent before its first beat
    /// until agent_heartbeat_s after that).
    since_s: f64,
    last_beat_s: Option<f64>,
    state: State,
    silence: Silence,
    exited: bool,
    not_active_since_s: Option<f64>,
    recovering: bool,
    breaker: Breaker,
    breaker_alerted: bool,
    restarts: u32,
}

/// What the core knows of one node, for /diagnostics and the report.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub state: State,
    pub want_active: bool,
    pub silent_s: Option<f64>,
    pub recovering: bool,
    pub breaker_open: bool,
    pub restarts: u32,
}

pub struct ManagerCore {
    cfg: Config,
    base: Instant,
    nodes: Vec<Watched>,
}

impl ManagerCore {
    /// Watches `nodes` (short names, in bring-up order); none is wanted yet.
    pub fn new(cfg: Config, nodes: &[String]) -> Self {
        let breaker = BreakerConfig {
            failure_threshold: cfg.breaker_failures.max(1),
            open_for: Duration::from_secs_f64(cfg.breaker_open_s.max(0.0)),
        };
        ManagerCore {
            base: Instant::now(),
            nodes: nodes
                .iter()
                .map(|n| Watched {
                    name: n.clone(),
                    want_active: false,
                    since_s: 0.0,
                    last_beat_s: None,
                    state: State::Unknown,
                    silence: Silence::Fine,
                    exited: false,
                    not_active_since_s: None,
                    recovering: false,
                    breaker: Breaker::new(breaker),
                    breaker_alerted: false,
                    restarts: 0,
                })
                .collect(),
            cfg,
        }
    }

    fn at(&self, now_s: f64) -> Instant {
        self.base + Duration::from_secs_f64(now_s.max(0.0))
    }

    pub fn view(&self, now_s: f64) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|w| NodeView {
                name: w.name.clone(),
                state: w.state,
                want_active: w.want_active,
                silent_s: w.last_beat_s.map(|t| now_s - t),
                recovering: w.recovering,
                breaker_open: w.breaker.state() == BreakerState::Open,
                restarts: w.restarts,
            })
            .collect()
    }

    pub fn step(&mut self, now_s: f64, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Beat { node, state } => {
                if let Some(w) = self.find(&node) {
                    w.last_beat_s = Some(now_s);
                    w.state = state;
                    w.exited = false;
                    if w.silence != Silence::Fine && w.want_active {
                        out.push(alert(
                            Severity::Info,
                            "node_back",
                            &w.name,
                            format!("heartbeats again, {}", state.label()),
                        ));
                    }
                    w.silence = Silence::Fine;
                    if state == State::Active || !w.want_active {
                        w.not_active_since_s = None;
                    } else if w.not_active_since_s.is_none() {
                        w.not_active_since_s = Some(now_s);
                    }
                }
            }
            Input::Exited { node } => {
                if let Some(w) = self.find(&node) {
                    if !w.exited {
                        w.exited = true;
                        if w.want_active {
                            out.push(alert(
                                Severity::Critical,
                                "node_exited",
                                &w.name,
                                "its process exited".into(),
                            ));
                        }
                    }
                }
                out.extend(self.tick(now_s));
            }
            Input::Recovered { node, ok } => {
                let at = self.at(now_s);
                if let Some(w) = self.find(&node) {
                    w.recovering = false;
                    if ok {
                        // It answered and is active: alive, whatever its
                        // last heartbeat said.
                        w.exited = false;
                        w.last_beat_s = Some(now_s);
                        w.silence = Silence::Fine;
                        w.breaker.record_success();
                        w.breaker_alerted = false;
                        w.not_active_since_s = None;
                        out.push(alert(
                            Severity::Info,
                            "node_recovered",
                            &w.name,
                            "back to active".into(),
                        ));
                        // Brought to Active by us: if it is the epoch
                        // issuer, that raised the holders' epochs, whether
                        // or not its transition event reaches us (a
                        // respawned one's can go out before our
                        // subscription has matched its new participant).
                        if node == self.cfg.epoch_issuer {
                            out.extend(self.fence_holders());
                        }
                    } else {
                        w.breaker.record_failure(at);
                        out.push(alert(
                            Severity::Error,
                            "recovery_failed",
                            &w.name,
                            "could not bring it back to active; will retry".into(),
                        ));
                    }
                }
            }
            Input::Want { node, active } => {
                if let Some(w) = self.find(&node) {
                    if active && !w.want_active {
                        w.since_s = now_s;
                        w.silence = Silence::Fine;
                        w.not_active_since_s = (w.state != State::Active).then_some(now_s);
                    }
                    w.want_active = active;
                }
            }
            Input::Activated { node } => {
                if node == self.cfg.epoch_issuer {
                    out.extend(self.fence_holders());
                }
            }
            Input::EpochStale { node } => {
                let why = format!(
                    "still Active in an epoch {} refuses: re-activating it for a new one",
                    self.cfg.epoch_issuer
                );
                out.extend(self.fence(Some(&node), why));
            }
            Input::Tick => out.extend(self.tick(now_s)),
        }
        out
    }

    /// The epoch issuer became Active again, which raised every holder's
    /// epoch: each holder the cell wants active, and not already being
    /// recovered, is re-activated for a new one.
    fn fence_holders(&mut self) -> Vec<Output> {
        let why = format!(
            "{} was activated again, which fences every CNC's epoch: \
             re-activating it for a new one",
            self.cfg.epoch_issuer
        );
        self.fence(None, why)
    }

    /// Re-activates each epoch holder (or only `only`) the cell wants
    /// active and that is not already being recovered.
    fn fence(&mut self, only: Option<&str>, why: String) -> Vec<Output> {
        let mut out = Vec::new();
        for w in self.nodes.iter_mut() {
            if !self.cfg.epoch_holders.contains(&w.name)
                || only.is_some_and(|n| n != w.name)
                || !w.want_active
                || w.recovering
            {
                continue;
            }
            w.recovering = true;
            out.push(alert(
                Severity::Warning,
                "epoch_fenced",
                &w.name,
                why.clone(),
            ));
            out.push(Output::Reactivate {
                node: w.name.clone(),
            });
        }
        out
    }

    fn find(&mut self, node: &str) -> Option<&mut Watched> {
        self.nodes.iter_mut().find(|w| w.name == node)
    }

    fn tick(&mut self, now_s: f64) -> Vec<Output> {
        let cfg = self.cfg.clone();
        let at = self.at(now_s);
        let mut out = Vec::new();
        for w in self.nodes.iter_mut().filter(|w| w.want_active) {
            if w.recovering {
                continue;
            }
            let silent_s = now_s - w.last_beat_s.unwrap_or(w.since_s).max(w.since_s);
            let respawn = w.exited || silent_s > cfg.critical_s;
            if silent_s > cfg.agent_heartbeat_s && w.silence == Silence::Fine {
                w.silence = Silence::Warned;
                out.push(alert(
                    Severity::Warning,
                    "node_silent",
                    &w.name,
                    format!("no heartbeat for {silent_s:.1} s"),
                ));
            }
            if silent_s > cfg.critical_s && w.silence != Silence::Critical {
                w.silence = Silence::Critical;
                out.push(alert(
                    Severity::Critical,
                    "node_offline",
                    &w.name,
                    format!("no heartbeat for {silent_s:.1} s: restarting it"),
                ));
            }
            let stuck = !respawn
                && w.silence == Silence::Fine
                && w.not_active_since_s
                    .is_some_and(|t| now_s - t > cfg.recover_grace_s);
            if !(respawn || stuck) {
                continue;
            }
            match w.breaker.allow(at) {
                Ok(()) => {
                    w.recovering = true;
                    w.exited = false;
                    // If this attempt fails and the breaker opens again, say so again.
                    w.breaker_alerted = false;
                    w.restarts += 1;
                    if stuck {
                        out.push(alert(
                            Severity::Warning,
                            "node_not_active",
                            &w.name,
                            format!(
                                "{} for over {:.1} s: configuring and activating it",
                                w.state.label(),
                                cfg.recover_grace_s
                            ),
                        ));
                    }
                    out.push(Output::Recover {
                        node: w.name.clone(),
                        respawn,
                    });
                }
                Err(r) if !w.breaker_alerted => {
                    w.breaker_alerted = true;
                    out.push(alert(
                        Severity::Critical,
                        "circuit_open",
                        &w.name,
                        format!(
                            "recoveries keep failing: next attempt in {:.0} s",
                            r.retry_in.as_secs_f64()
                        ),
                    ));
                }
                Err(_) => {}
            }
        }
        out
    }
}

fn alert(severity: Severity, name: &'static str, node: &str, message: String) -> Output {
    Output::Alert(Alert {
        severity,
        name,
        node: node.to_string(),
        message,
    })
}
