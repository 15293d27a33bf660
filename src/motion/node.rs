//! The motion controller node `cnc_<id>`: the r2r shell around the GRBL
//! client, the pick planner and the pick executor.
//!
//! - configure: open the port, soft reset and wait for the banner, check
//!   `$$` against the params, home with `$H` where homing is enabled and the board is locked (position unknown), set
//!   absolute millimetres, rest at the safe height inside the workspace.
//!   A board found at 0, 0, 0 after the port was away lost power (it
//!   counts from where it stood): it is homed, or without homing refused
//!   until an operator's unlock.
//! - activate: a new epoch from the state manager; picks are accepted.
//! - deactivate: no new picks; the current one finishes (bounded) or is
//!   stopped with a feed hold and a reset.
//! - a fault (alarm, the port closing, a line unanswered): feed hold, reset
//!   (vacuum off), the pick's object to MISSED, and the lifecycle's error
//!   transition (the kit reconnects with backoff).
//!
//! Services: `cnc_<id>/estop` (std_srvs/Trigger: feed hold, reset, error)
//! and `cnc_<id>/unlock` (`$X`, only ever sent from here). Action:
//! `cnc_<id>/pick` (PickObject). Topics: `cnc_<id>/status` (CncStatus),
//! `pick_results` (PickResult).

use super::grbl::client::{rt, Answer, ClientConfig, Event, Grbl};
use super::grbl::reply::{MachineState, Reply, Status};
use super::params::{settings_mismatches, MotionParams};
use super::pick::{pick, Clock, Done, Job, Outcome, PickError};
use super::plan::Phase;
use crate::kinematics::Trajectory;
use crate::kit::alerts::Alerts;
use crate::kit::breaker::BreakerConfig;
use crate::kit::call::{reply, Caller};
use crate::kit::health::Counters;
use crate::kit::lifecycle::{ActiveGate, Faults, LifecyclePublisher, State, Steps};
use crate::kit::node::{self, NodeContext};
use crate::kit::params::Params;
use crate::kit::retry::{Backoff, DeadLetters, RetryPolicy};
use crate::kit::spin::SharedNode;
use crate::kit::time::{from_duration, seconds, wall_now, wall_now_s};
use crate::kit::trace::trace_id;
use crate::msgs::action::PickObject;
use crate::msgs::msg as m;
use crate::msgs::srv::{BeginEpoch, TransitionObject};
use crate::state::lifecycle::{after_pick, ObjState};
use crate::state::node::STORE_UNAVAILABLE;
use futures::StreamExt;
use nalgebra::Vector3;
use r2r::QosProfile;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

pub const PICK_RESULTS_TOPIC: &str = "pick_results";

/// The alert for a pick's outcome the state manager did not record, or
/// recorded otherwise (it had settled the object while the pick ran).
pub const OUTCOME_UNRECORDED_ALERT: &str = crate::kit::alerts::PICK_OUTCOME_UNRECORDED;
pub const PICKS: &str = "picks";
pub const PICKED: &str = "picked";
pub const REJECTED: &str = "picks_rejected";
pub const FAULTS: &str = "faults";

/// What the node knows of its machine, shared by its tasks.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub grbl_state: String,
    pub machine_mm: [f64; 3],
    pub wco_mm: Option<[f64; 3]>,
    pub vacuum_on: bool,
    pub holding: bool,
    pub busy: bool,
    pub current: [u8; 16],
    pub epoch: u64,
    pub alarm: u16,
    pub last_error: String,
}

type SharedLive = Arc<Mutex<Live>>;

/// How long a CNC keeps trying to record a transition the store could not
/// take (a full disk) or did not answer; then the object is left to the
/// state manager (its epochs and expiry).
const RECORD_FOR: Duration = Duration::from_secs(30);

/// The waits between a CNC's attempts to record a transition: doubling
/// from 250 ms, then each second, so a store that comes back (a restarted
/// state manager takes up to 4 s) hears from the CNC within a second.
fn record_waits() -> impl Iterator<Item = Duration> {
    let backoff = Backoff {
        initial: Duration::from_millis(250),
        multiplier: 2.0,
        max: Duration::from_secs(1),
        jitter: 0.0,
    };
    (1..).map(move |retry| backoff.delay(retry, 0.5))
}

/// Why a transition was not recorded.
enum Record {
    /// Final: a stale epoch, the object in another state.
    Refused(NotRecorded),
    /// The store could not take it now, or did not answer.
    NotNow(String),
}

/// A transition the store did not record: why, and the state it holds
/// the object in instead, when it said so (a refusal).
struct NotRecorded {
    why: String,
    holds: Option<ObjState>,
}

impl std::fmt::Display for NotRecorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// What becomes of a pick's outcome the state manager did not record.
#[derive(Debug, PartialEq)]
enum Unrecorded {
    /// The store holds that outcome already (a MISSED found MISSED):
    /// nothing to reconcile.
    Held,
    /// The store still holds the object PICKING, so it refused the pick's
    /// epoch: its recovery raised the CNC's epoch while the pick ran. The
    /// outcome is reported with the CNC's next epoch (BeginEpoch), which
    /// the state manager's recovery is followed by.
    NextEpoch,
    /// Raised as an alert with this message, for whoever reconciles the
    /// bins with the store.
    Raise(String),
}

/// What to do with the outcome `to` of a pick of `trace` that was not
/// recorded (`e`).
fn unrecorded(trace: &str, to: ObjState, e: &NotRecorded) -> Unrecorded {
    match e.holds {
        Some(s) if s == to => Unrecorded::Held,
        Some(ObjState::Picking) => Unrecorded::NextEpoch,
        holds => Unrecorded::Raise(format!(
            "the pick of {trace} ended {to}, which the state manager did not record{}: {e}",
            holds
                .map(|s| format!(" (it holds {s})"))
                .unwrap_or_default()
        )),
    }
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `fut` to completion on a runtime of its own, on a thread of its
/// own: lifecycle steps are synchronous, and configure waits on the board.
fn block_on<T: Send>(fut: impl std::future::Future<Output = T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(fut))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the configure thread panicked"))?
    })
}

/// Streams lines and waits for the last; each bounded.
async fn run_lines(g: &Grbl, lines: &[String], timeout: Duration) -> anyhow::Result<()> {
    for l in lines {
        match g.send_within(l, timeout).await? {
            Answer::Ok => {}
            Answer::Error(c) => anyhow::bail!(
                "{}: {l:?} refused: error:{c} ({})",
                g.path(),
                super::grbl::reply::error_text(c)
            ),
        }
    }
    Ok(())
}

/// Whether a board found unlocked at `now_mm` after the reset lost power
/// since this process last had it at `was_mm`. GRBL counts from 0 where
/// it powers on, and boots unlocked when homing is disabled; the
/// workspace keeps every axis at least its margin from 0, and configure
/// always leaves the gantry inside it. So a board at exactly 0 that stood
/// elsewhere was powered off (its cable pulled), and its zero is now
/// wherever it stood: its position is unknown.
fn powered_off_since(was_mm: Option<[f64; 3]>, now_mm: [f64; 3]) -> bool {
    // GRBL reports three decimals.
    const AT_ZERO_MM: f64 = 1e-3;
    was_mm.is_some_and(|w| {
        now_mm.iter().all(|v| v.abs() < AT_ZERO_MM) && w.iter().any(|v| v.abs() >= AT_ZERO_MM)
    })
}

/// configure's conversation with the board. `was_mm`: where this process
/// last had the machine (none at its start, or after an operator's unlock).
async fn bring_up(
    g: &Grbl,
    p: &MotionParams,
    live: &SharedLive,
    was_mm: Option<[f64; 3]>,
) -> anyhow::Result<()> {
    let response = Duration::from_secs_f64(p.grbl_command_response_s);
    // The board may still be moving (this node's last process died in a
    // pick): hold until it is at rest first, so the reset keeps the
    // position instead of losing it (ALARM:3) and forcing a re-home.
    g.stop_safely(super::grbl::client::STOP_WAIT).await;
    let version = g
        .soft_reset(Duration::from_secs_f64(p.banner_timeout_s))
        .await?;
    tracing::info!(cnc = %p.cnc_id, port = %p.port, %version, "GRBL answered");
    let board = g.settings().await?;
    let wrong = settings_mismatches(&p.expected_settings(), &board);
    if !wrong.is_empty() {
        anyhow::bail!(
            "{}: the board's settings differ: {}",
            p.port,
            wrong.join("; ")
        );
    }
    // Locked (Alarm) after the reset: the board was just powered on with
    // homing enabled, a limit was hit, or it was reset while moving; its
    // position is unknown. Otherwise GRBL kept its position through the
    // reset (a restart of this node), and homing again would only cost time.
    let after_reset = status_now(g, response).await?;
    let locked = after_reset.state == Some(MachineState::Alarm);
    let found_mm = after_reset.machine_mm(None);
    let powered_off = !locked && found_mm.is_some_and(|at| powered_off_since(was_mm, at));
    let homes = (locked || powered_off) && p.homing;
    if homes {
        if powered_off {
            tracing::warn!(
                cnc = %p.cnc_id,
                was_mm = ?was_mm,
                "the board lost power while the port was away, and booted unlocked: homing"
            );
        }
        run_lines(
            g,
            &["$H".into()],
            Duration::from_secs_f64(p.homing_timeout_s),
        )
        .await?;
    } else if locked {
        // Locked after a reset: a limit was hit, or it was reset while
        // moving. Without homing only a person may clear that.
        anyhow::bail!(
            "{}: the board is in alarm lock (position unknown) and homing is disabled: \
             check the machine, then call cnc_{}/unlock ($X) and configure again",
            p.port,
            p.cnc_id
        );
    } else if powered_off {
        // It would take its zero from where it stands: every move would
        // land that far off, outside the workspace.
        let [x, y, z] = was_mm.unwrap_or_default();
        anyhow::bail!(
            "{}: the board lost power while the port was away: it reports 0, 0, 0, where \
             it powered on, but stood at {x:.3}, {y:.3}, {z:.3} mm, so its position is \
             unknown, and homing is disabled: move the gantry to its machine zero, then \
             call cnc_{}/unlock and configure again",
            p.port,
            p.cnc_id
        );
    }
    run_lines(g, &["G90 G21 G94".into(), "M9".into()], response).await?;
    // Where it is: where homing left it, or else where the reset found it
    // (nothing has moved it since).
    let at = if homes {
        status_now(g, response).await?.machine_mm(None)
    } else {
        found_mm
    }
    .ok_or_else(|| anyhow::anyhow!("{}: the status report has no position", p.port))?;
    // To rest where it stands: up to the safe height if below it, and
    // inside the workspace (a homed gantry stands just outside). No park
    // mid-window: the first pick's approach starts from here as well as
    // from there, and crossing to it cost every restart about 2 s.
    let picker = p.picker();
    let from = Vector3::from(at);
    let rest = picker.safe_rest_mm(from);
    picker.workspace.check(rest)?;
    if (rest - from).norm() > 1e-6 {
        let move_s = picker
            .limits
            .move_time_s(from, rest, picker.limits.rapid_mm_per_min());
        let lines = [
            format!("G0 X{:.3} Y{:.3} Z{:.3}", rest.x, rest.y, rest.z),
            "G4 P0".into(),
        ];
        run_lines(g, &lines, response + Duration::from_secs_f64(move_s * 2.0)).await?;
    }
    lock(live).machine_mm = [rest.x, rest.y, rest.z];
    // At rest: one more report, so the status says so from the start.
    status_now(g, response).await?;
    Ok(())
}

/// The board's next status report (asked for now), bounded.
async fn status_now(g: &Grbl, response: Duration) -> anyhow::Result<Status> {
    let mut events = g.subscribe();
    g.realtime(rt::STATUS)?;
    tokio::time::timeout(response, async {
        loop {
            match events.recv().await {
                Ok(Event::Line(Reply::Status(s))) => return Ok(s),
                Ok(Event::Disconnected(why)) => anyhow::bail!("{}: {why}", g.path()),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    anyhow::bail!("{}: the port thread has stopped", g.path())
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("{}: no status report within {response:?}", g.path()))?
}

/// Keeps `live` up to date from the board's reports; reports faults.
fn watch(g: &Grbl, live: SharedLive, faults: Faults, gate: ActiveGate) -> JoinHandle<()> {
    let mut events = g.subscribe();
    tokio::spawn(async move {
        loop {
            let e = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let mut l = lock(&live);
            match e {
                Event::Line(Reply::Status(s)) => {
                    if let Some(st) = s.state {
                        l.grbl_state = st.label();
                    }
                    if s.wco_mm.is_some() {
                        l.wco_mm = s.wco_mm;
                    }
                    if let Some(mm) = s.machine_mm(l.wco_mm) {
                        l.machine_mm = mm;
                    }
                    let acc = s.accessories.unwrap_or_default();
                    l.vacuum_on = acc.contains('F') || acc.contains('S');
                    l.holding = s.pins.is_some_and(|p| p.contains('P'));
                }
                Event::Line(Reply::Alarm(code)) => {
                    l.alarm = code as u16;
                    l.last_error =
                        format!("ALARM:{code} ({})", super::grbl::reply::alarm_text(code));
                    if gate.is_open() {
                        faults.raise(l.last_error.clone());
                    }
                }
                Event::Line(Reply::Garbage { line, why }) => {
                    tracing::warn!(line = %line.escape_debug(), "GRBL sent line noise: {why}");
                }
                Event::Line(Reply::Msg(msg)) => tracing::info!("GRBL: [MSG:{msg}]"),
                Event::Disconnected(why) => {
                    l.last_error = format!("the port closed: {why}");
                    if gate.is_open() {
                        faults.raise(l.last_error.clone());
                    }
                }
                Event::Line(_) => {}
            }
        }
    })
}

type Slot = Arc<Mutex<Option<Arc<Grbl>>>>;
use r2r::std_srvs::srv::Trigger;

fn client_config(p: &MotionParams) -> ClientConfig {
    let mut c = ClientConfig::new(&p.port);
    c.baud = p.baud as u32;
    c.response_timeout = Duration::from_secs_f64(p.grbl_command_response_s);
    c.poll_period = Duration::from_secs_f64(p.poll_idle_s);
    c
}

/// The board: the node's connection, or (unconfigured) the port opened
/// for one exchange.
fn board(slot: &Slot, p: &MotionParams) -> Result<Arc<Grbl>, String> {
    if let Some(g) = lock(slot).clone() {
        return Ok(g);
    }
    Grbl::open(client_config(p))
        .map(Arc::new)
        .map_err(|e| format!("not connected, and the port would not open: {e}"))
}

/// E-stop: the feed hold at once; at rest (position kept), the reset
/// (vacuum off); the node leaves Active and stays out until configured.
async fn emergency_stop(
    slot: &Slot,
    p: &MotionParams,
    live: &SharedLive,
    faults: &Faults,
) -> Trigger::Response {
    let t0 = Instant::now();
    let g = match board(slot, p) {
        Ok(g) => g,
        Err(message) => {
            return Trigger::Response {
                success: false,
                message,
            }
        }
    };
    let held = g.realtime(rt::FEED_HOLD);
    let latency = t0.elapsed().as_secs_f64();
    g.stop_safely(super::grbl::client::STOP_WAIT).await;
    lock(live).last_error = "e-stop".into();
    tracing::warn!(cnc = %p.cnc_id, "e-stop");
    faults.latch("e-stop: feed hold and reset sent");
    match held {
        Ok(()) => Trigger::Response {
            success: true,
            message: format!(
                "feed hold written {:.3} ms after the call; reset sent",
                latency * 1e3
            ),
        },
        Err(e) => Trigger::Response {
            success: false,
            message: format!("could not write the feed hold: {e}"),
        },
    }
}

/// `$X`: only ever sent from here, on an operator's request.
async fn unlock_board(slot: &Slot, p: &MotionParams) -> Trigger::Response {
    tracing::warn!(cnc = %p.cnc_id, "unlock ($X) requested by an operator");
    let response = Duration::from_secs_f64(p.grbl_command_response_s);
    let connected = lock(slot).is_some();
    let g = match board(slot, p) {
        Ok(g) if !connected => {
            // Opened just now: the board may be rebooting (DTR) or printing
            // a banner; reset it first (a reset keeps the alarm lock).
            let banner = Duration::from_secs_f64(p.banner_timeout_s);
            g.soft_reset(banner)
                .await
                .map(|_| g)
                .map_err(|e| e.to_string())
        }
        other => other,
    };
    let (success, message) = match g {
        Err(e) => (false, e),
        Ok(g) => match g.send_within("$X", response).await {
            Ok(Answer::Ok) => (
                true,
                "unlocked ($X): the position is not known; home or check it before picking".into(),
            ),
            Ok(Answer::Error(c)) => (
                false,
                format!(
                    "$X refused: error:{c} ({})",
                    super::grbl::reply::error_text(c)
                ),
            ),
            Err(e) => (false, e.to_string()),
        },
    };
    Trigger::Response { success, message }
}

/// Everything a pick needs, cloned into its task.
#[derive(Clone)]
struct Ctx {
    g: Arc<Grbl>,
    p: MotionParams,
    live: SharedLive,
    faults: Faults,
    counters: Counters,
    transition: Arc<Caller<TransitionObject::Service>>,
    alerts: Alerts,
    unreported: Unreported,
}

/// Results of picks whose epoch was fenced while they ran, for the CNC's
/// next epoch to report; kept across activations, not across a restart
/// of the process (the state manager then ends those picks MISSED).
type Unreported = Arc<Mutex<Vec<m::PickResult>>>;

fn outcome_msg(v: u8) -> m::PickOutcome {
    m::PickOutcome { value: v }
}

const PICKED_V: u8 = m::PickOutcome::PICKED as u8;
const DROPPED_V: u8 = m::PickOutcome::DROPPED as u8;
const MISSED_V: u8 = m::PickOutcome::MISSED as u8;
const ABORTED_V: u8 = m::PickOutcome::ABORTED as u8;
const REJECTED_V: u8 = m::PickOutcome::REJECTED as u8;
const FAULT_V: u8 = m::PickOutcome::FAULT as u8;

impl Ctx {
    /// A transition of the picked object, in the epoch the pick was
    /// accepted in (if the CNC has been re-activated since, the state
    /// manager has settled the object already and refuses this as stale).
    async fn transition(
        &self,
        epoch: u64,
        object: [u8; 16],
        from: ObjState,
        to: ObjState,
        reason: &str,
    ) -> Result<(), NotRecorded> {
        // When it happened, whenever the store takes it.
        let stamp = wall_now();
        let mut waits = record_waits();
        let give_up = tokio::time::Instant::now() + RECORD_FOR;
        loop {
            let wait = waits.next().unwrap_or(RECORD_FOR);
            match self
                .transition_once(epoch, object, from, to, reason, &stamp)
                .await
            {
                Ok(()) => return Ok(()),
                Err(Record::Refused(e)) => return Err(e),
                // The store could not take it now (a full disk), or did not
                // answer through the caller's own retries: the outcome of a
                // pick must not be lost, so again, bounded.
                Err(Record::NotNow(e)) if tokio::time::Instant::now() + wait < give_up => {
                    tracing::warn!(
                        trace_id = %trace_id(&object),
                        "recording {to}: {e}; trying again in {wait:?}"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(Record::NotNow(why)) => return Err(NotRecorded { why, holds: None }),
            }
        }
    }

    /// One transition request (the caller retries a lost answer under one
    /// request id).
    async fn transition_once(
        &self,
        epoch: u64,
        object: [u8; 16],
        from: ObjState,
        to: ObjState,
        reason: &str,
        stamp: &r2r::builtin_interfaces::msg::Time,
    ) -> Result<(), Record> {
        let position = lock(&self.live).machine_mm;
        let r = self
            .transition
            .call(|rid| {
                let mut r = TransitionObject::Request {
                    request_id: rid.into(),
                    actor: format!("cnc_{}", self.p.cnc_id),
                    cnc_id: self.p.cnc_id.clone(),
                    epoch,
                    reason: reason.into(),
                    belt_position_m: self.p.picker().frame.to_belt_m(Vector3::from(position)).x,
                    ..Default::default()
                };
                r.object_id.uuid = object.to_vec();
                r.expected_state.id = from.id();
                r.new_state.id = to.id();
                r.stamp = stamp.clone();
                r
            })
            .await
            .map_err(|e| Record::NotNow(e.to_string()))?;
        if r.accepted {
            Ok(())
        } else if r.error.starts_with(STORE_UNAVAILABLE) {
            Err(Record::NotNow(r.error))
        } else {
            Err(Record::Refused(NotRecorded {
                why: r.error,
                holds: ObjState::from_id(r.current_state.id),
            }))
        }
    }

    /// Carries out one accepted goal; returns its result, and the
    /// PickResult to publish (None if it never started).
    async fn run(
        &self,
        goal: &PickObject::Goal,
        feedback: impl Fn(u8, f64),
    ) -> (PickObject::Result, Option<m::PickResult>) {
        let t0 = Instant::now();
        let object: [u8; 16] = goal.object_id.uuid.clone().try_into().unwrap_or([0; 16]);
        let trace = trace_id(&object);
        let mut result = PickObject::Result::default();
        self.counters.add(PICKS, 1);
        self.counters.add(crate::kit::health::MESSAGES, 1);
        if let Err(e) = self
            .transition(
                goal.epoch,
                object,
                ObjState::Assigned,
                ObjState::Picking,
                "pick started",
            )
            .await
        {
            tracing::warn!(trace_id = %trace, "pick not started: {e}");
            result.outcome = outcome_msg(REJECTED_V);
            result.error = format!("the state manager refused PICKING: {e}");
            return (result, None);
        }
        let job = Job {
            traj: Trajectory {
                x_m: goal.position.point.x,
                y_m: goal.position.point.y,
                t0_s: seconds(&goal.position.header.stamp),
                vx_mps: goal.velocity.x,
            },
            height_m: goal.position.point.z,
            bin_m: self.p.bin_for(&goal.class_id).unwrap_or_default(),
            belt_mps: goal.velocity.x,
            release_dwell_s: self.p.release_dwell_s,
        };
        let from = Vector3::from(lock(&self.live).machine_mm);
        self.g
            .set_poll_period(Duration::from_secs_f64(self.p.poll_busy_s));
        let now = wall_now_s;
        let clock = Clock {
            now_s: &now,
            time_scale: 1.0,
        };
        let response = Duration::from_secs_f64(self.p.grbl_command_response_s);
        let contact_at = std::sync::Mutex::new(0.0);
        let r = pick(
            &self.g,
            &self.p.picker(),
            from,
            &job,
            &clock,
            response,
            |ph| {
                let code = match ph {
                    Phase::Approach => PickObject::Feedback::PHASE_PREPOSITION as u8,
                    Phase::Contact => PickObject::Feedback::PHASE_DESCEND as u8,
                    Phase::Carry => PickObject::Feedback::PHASE_CARRY as u8,
                };
                feedback(
                    code,
                    (*contact_at.lock().unwrap_or_else(|e| e.into_inner()) - wall_now_s()).max(0.0),
                );
            },
        )
        .await;
        self.g
            .set_poll_period(Duration::from_secs_f64(self.p.poll_idle_s));
        let (outcome, error) = match &r {
            Ok(Done {
                outcome,
                at_mm,
                intercept,
            }) => {
                lock(&self.live).machine_mm = [at_mm.x, at_mm.y, at_mm.z];
                result.pick_time =
                    from_duration(Duration::from_secs_f64(intercept.contact_at_s.max(0.0)));
                match outcome {
                    Outcome::Picked => (PICKED_V, String::new()),
                    Outcome::Dropped => (DROPPED_V, "lost after the grip".into()),
                    Outcome::Missed => (MISSED_V, "nothing on the nozzle after the ride".into()),
                }
            }
            Err(e @ (PickError::Late { .. } | PickError::Unreachable(_))) => {
                (ABORTED_V, e.to_string())
            }
            Err(e @ PickError::Plan(_)) => (REJECTED_V, e.to_string()),
            Err(e) => {
                // A machine fault mid-pick: stop it keeping the position,
                // vacuum off (the reset); the lifecycle takes over once the
                // object is recorded.
                self.g.stop_safely(super::grbl::client::STOP_WAIT).await;
                self.counters.add(FAULTS, 1);
                self.counters.add(crate::kit::health::ERRORS, 1);
                (FAULT_V, e.to_string())
            }
        };
        // Where the outcome leaves the object, as the state manager reads
        // a reported one.
        let to = after_pick(outcome).unwrap_or(ObjState::Missed);
        if outcome == PICKED_V {
            self.counters.add(PICKED, 1);
        }
        result.outcome = outcome_msg(outcome);
        result.cycle_time_s = t0.elapsed().as_secs_f64();
        result.error = error.clone();
        let mut pr = m::PickResult {
            object_id: goal.object_id.clone(),
            cnc_id: self.p.cnc_id.clone(),
            epoch: goal.epoch,
            outcome: result.outcome.clone(),
            pick_time: result.pick_time.clone(),
            cycle_time_s: result.cycle_time_s,
            error: result.error.clone(),
            ..Default::default()
        };
        pr.header.stamp = wall_now();
        if let Err(e) = self
            .transition(goal.epoch, object, ObjState::Picking, to, &error)
            .await
        {
            // What the CNC did is not (yet) what the single source of
            // truth holds.
            match unrecorded(&trace, to, &e) {
                Unrecorded::Held => tracing::warn!(trace_id = %trace, "recording {to}: {e}"),
                Unrecorded::NextEpoch => {
                    tracing::warn!(
                        trace_id = %trace,
                        "recording {to}: {e}; reported with this CNC's next epoch"
                    );
                    lock(&self.unreported).push(pr.clone());
                }
                Unrecorded::Raise(message) => {
                    tracing::error!(trace_id = %trace, "recording {to}: {e}");
                    self.alerts.raise(
                        m::Alert::ERROR as u8,
                        OUTCOME_UNRECORDED_ALERT,
                        Some(&object),
                        message,
                    );
                }
            }
        }
        if outcome == FAULT_V {
            self.faults.raise(format!("pick of {trace}: {error}"));
        }
        tracing::info!(trace_id = %trace, outcome = outcome, "{}", if error.is_empty() { "picked" } else { &error });
        (result, Some(pr))
    }
}

/// An accepted goal's handle, moved into the task that carries it out.
/// r2r's handle is not `Send` only because it holds a `Weak` to a `dyn`
/// server without a `Send` bound; every method locks that server's
/// `Mutex` (r2r declares its goal requests `Send` on the same grounds).
struct GoalHandle(r2r::ActionServerGoal<PickObject::Action>);

impl GoalHandle {
    fn feedback(&self, phase: u8, eta_s: f64) {
        let _ = self
            .0
            .publish_feedback(PickObject::Feedback { phase, eta_s });
    }
}

// SAFETY: see above: all access to the shared server goes through its Mutex.
unsafe impl Send for GoalHandle {}
// SAFETY: as for Send.
unsafe impl Sync for GoalHandle {}

/// Whether a goal may be accepted now, or why not.
pub fn check_goal(
    goal: &PickObject::Goal,
    p: &MotionParams,
    live: &Live,
    from_mm: Vector3<f64>,
    now_s: f64,
) -> Result<(), String> {
    if live.busy {
        return Err("busy with another pick".into());
    }
    if goal.epoch != live.epoch {
        return Err(format!(
            "stale epoch {} (this CNC's is {})",
            goal.epoch, live.epoch
        ));
    }
    if goal.object_id.uuid.len() != 16 {
        return Err(format!(
            "object_id has {} bytes; a UUID has 16",
            goal.object_id.uuid.len()
        ));
    }
    let pt = &goal.position.point;
    if ![pt.x, pt.y, pt.z, goal.velocity.x]
        .iter()
        .all(|v| v.is_finite())
    {
        return Err("position or velocity is not a finite number".into());
    }
    if p.bin_for(&goal.class_id).is_none() {
        return Err(format!("no bin for class {:?} on this CNC", goal.class_id));
    }
    let traj = Trajectory {
        x_m: pt.x,
        y_m: pt.y,
        t0_s: seconds(&goal.position.header.stamp),
        vx_mps: goal.velocity.x,
    };
    let i = p
        .picker()
        .intercept(&traj, pt.z, from_mm, now_s)
        .map_err(|e| format!("cannot reach it: {e}"))?;
    let deadline = seconds(&goal.deadline);
    if deadline > 0.0 && i.contact_at_s > deadline {
        return Err(format!(
            "the earliest contact ({:.3} s) is after the deadline ({deadline:.3} s)",
            i.contact_at_s
        ));
    }
    if i.contact_at_s - now_s > p.motion_wait_for_trigger_s {
        return Err(format!(
            "the object reaches its pick point in {:.1} s, over motion_wait_for_trigger_s",
            i.contact_at_s - now_s
        ));
    }
    Ok(())
}

pub struct MotionNode {
    node: SharedNode,
    gate: ActiveGate,
    params: Params<MotionParams>,
    faults: Faults,
    counters: Counters,
    live: SharedLive,
    /// The board while configured (from the port's opening on).
    grbl: Slot,
    /// Held by each whole conversation with the board that must not be
    /// interleaved with another: configure (open, reset, check, home,
    /// park) and an operator's unlock. Without it, an unlock sent while
    /// the node's own recovery was configuring had its `$X` lost to the
    /// reset, or read by the other's port. The e-stop never waits on it.
    conversation: Arc<tokio::sync::Mutex<()>>,
    /// The e-stop and unlock services: for the node's whole life.
    service_tasks: Vec<JoinHandle<()>>,
    configured_tasks: Vec<JoinHandle<()>>,
    active_tasks: Vec<JoinHandle<()>>,
    unreported: Unreported,
    /// Where the machine was when this process last let go of a board it
    /// had brought up (the next bring-up checks the board did not lose
    /// power meanwhile); none at the start and after an operator's unlock.
    last_at_mm: LastAt,
    /// The board now open was brought up: its position is known.
    brought_up: bool,
}

type LastAt = Arc<Mutex<Option<[f64; 3]>>>;

impl MotionNode {
    pub fn new(c: &NodeContext<MotionParams>) -> Self {
        MotionNode {
            node: c.node.clone(),
            gate: c.gate.clone(),
            params: c.params.clone(),
            faults: c.faults.clone(),
            counters: c.counters.clone(),
            live: Default::default(),
            grbl: Default::default(),
            conversation: Default::default(),
            service_tasks: Vec::new(),
            configured_tasks: Vec::new(),
            active_tasks: Vec::new(),
            unreported: Default::default(),
            last_at_mm: Default::default(),
            brought_up: false,
        }
    }

    /// `cnc_<id>/estop` and `cnc_<id>/unlock`, served whatever the
    /// lifecycle state: with the node unconfigured (after a fault, or a
    /// configure refused because the board is locked) they open the port
    /// for the one exchange.
    fn serve_estop_and_unlock(&mut self) -> anyhow::Result<()> {
        let prefix = self.prefix();
        let mut n = self.node.lock();
        let (estop_service, unlock_service) =
            (format!("{prefix}/estop"), format!("{prefix}/unlock"));
        let mut estop =
            n.create_service::<Trigger::Service>(&estop_service, QosProfile::services_default())?;
        let mut unlock =
            n.create_service::<Trigger::Service>(&unlock_service, QosProfile::services_default())?;
        drop(n);
        let (slot, params) = (self.grbl.clone(), self.params.clone());
        let (live, faults) = (self.live.clone(), self.faults.clone());
        self.service_tasks.push(tokio::spawn(async move {
            while let Some(req) = estop.next().await {
                let resp = emergency_stop(&slot, &params.get(), &live, &faults).await;
                reply(req, &estop_service, resp);
            }
        }));
        let (slot, params) = (self.grbl.clone(), self.params.clone());
        let (conversation, last_at) = (self.conversation.clone(), self.last_at_mm.clone());
        self.service_tasks.push(tokio::spawn(async move {
            while let Some(req) = unlock.next().await {
                let _talking = conversation.lock().await;
                let resp = unlock_board(&slot, &params.get()).await;
                if resp.success {
                    // The operator has checked the machine: its position
                    // is taken as the board gives it.
                    *lock(&last_at) = None;
                }
                reply(req, &unlock_service, resp);
            }
        }));
        Ok(())
    }

    /// CncStatus at a steady rate from configure to cleanup (Inactive
    /// included: an operator wants to see a machine that is not picking).
    fn publish_status(&mut self, p: &MotionParams) -> anyhow::Result<()> {
        let status = self.node.lock().create_publisher::<m::CncStatus>(
            &format!("{}/status", self.prefix()),
            QosProfile::default().keep_last(10),
        )?;
        let (live, gate) = (self.live.clone(), self.gate.clone());
        let (cnc_id, picker) = (p.cnc_id.clone(), p.picker());
        let period = Duration::from_secs_f64(p.status_period_s);
        self.configured_tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let l = lock(&live).clone();
                let belt = picker.frame.to_belt_m(Vector3::from(l.machine_mm));
                let lifecycle = if gate.is_open() {
                    State::Active
                } else {
                    State::Inactive
                };
                let mut s = m::CncStatus {
                    cnc_id: cnc_id.clone(),
                    lifecycle_state: lifecycle.id(),
                    grbl_state: l.grbl_state.clone(),
                    position_machine_mm: l.machine_mm.to_vec(),
                    vacuum_on: l.vacuum_on,
                    busy: l.busy,
                    epoch: l.epoch,
                    alarm: l.alarm,
                    last_error: l.last_error.clone(),
                    queue_depth: l.busy as u32,
                    ..Default::default()
                };
                s.position_belt.x = belt.x;
                s.position_belt.y = belt.y;
                s.position_belt.z = belt.z;
                s.current_object.uuid = l.current.to_vec();
                s.header.stamp = wall_now();
                s.header.frame_id = "belt".into();
                let _ = status.publish(&s);
            }
        }));
        Ok(())
    }

    fn prefix(&self) -> String {
        format!("cnc_{}", self.params.get().cnc_id)
    }

    fn close(&mut self) {
        for t in self
            .active_tasks
            .drain(..)
            .chain(self.configured_tasks.drain(..))
        {
            t.abort();
        }
        if std::mem::take(&mut self.brought_up) {
            *lock(&self.last_at_mm) = Some(lock(&self.live).machine_mm);
        }
        if let Some(g) = lock(&self.grbl).take() {
            // Vacuum off and motion stopped before the port closes; closed
            // now, whoever still holds the handle, so that it can be
            // opened again at once.
            let _ = g.realtime(rt::FEED_HOLD);
            let _ = g.realtime(rt::SOFT_RESET);
            g.close();
        }
    }
}

impl Drop for MotionNode {
    fn drop(&mut self) {
        for t in self.service_tasks.drain(..) {
            t.abort();
        }
        self.close();
    }
}

impl Steps for MotionNode {
    fn configure(&mut self) -> anyhow::Result<()> {
        if self.service_tasks.is_empty() {
            self.serve_estop_and_unlock()?;
        }
        // Until configure ends, the board is this conversation's alone.
        let conversation = self.conversation.clone();
        let _talking = block_on(async move { conversation.lock_owned().await })?;
        let p = self.params.get();
        let g = Arc::new(Grbl::open(client_config(&p))?);
        *lock(&self.live) = Live::default();
        // Reachable by the e-stop from here on.
        *lock(&self.grbl) = Some(g.clone());
        // Watching the board's reports from the start.
        self.configured_tasks.push(watch(
            &g,
            self.live.clone(),
            self.faults.clone(),
            self.gate.clone(),
        ));
        let live = self.live.clone();
        let (g2, p2) = (g.clone(), p.clone());
        let was_mm = *lock(&self.last_at_mm);
        if let Err(e) =
            block_on(async move { bring_up(&g2, &p2, &live, was_mm).await }).and_then(|r| r)
        {
            self.close();
            return Err(e);
        }
        self.brought_up = true;
        self.publish_status(&p)?;
        Ok(())
    }

    fn activate(&mut self) -> anyhow::Result<()> {
        let p = self.params.get();
        let g = lock(&self.grbl)
            .clone()
            .ok_or_else(|| anyhow::anyhow!("not configured"))?;
        let prefix = self.prefix();
        let mut n = self.node.lock();
        let policy = RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::default(),
        };
        let timeout = Duration::from_secs_f64(p.state_call_timeout_s);
        let breaker = BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
        };
        let begin = Caller::<BeginEpoch::Service>::new(
            &mut n,
            crate::state::node::EPOCH_SERVICE,
            timeout,
            policy,
            breaker,
            DeadLetters::in_memory(),
            1,
        )?;
        let transition = Arc::new(Caller::<TransitionObject::Service>::new(
            &mut n,
            crate::state::node::TRANSITION_SERVICE,
            timeout,
            policy,
            breaker,
            DeadLetters::in_memory(),
            2,
        )?);
        let results = LifecyclePublisher::new(
            n.create_publisher::<m::PickResult>(
                PICK_RESULTS_TOPIC,
                QosProfile::default().reliable().keep_last(100),
            )?,
            self.gate.clone(),
        );
        let alerts = Alerts::new(&mut n, &format!("cnc_{}", p.cnc_id), self.gate.clone())?;
        let mut goals = n.create_action_server::<PickObject::Action>(&format!("{prefix}/pick"))?;
        drop(n);
        let cnc_id = p.cnc_id.clone();
        // What the earlier epochs' picks did that the store refused as
        // stale (a pick in flight through the state manager's recovery).
        let unrecorded = lock(&self.unreported).clone();
        let reports = unrecorded.clone();
        let epoch = block_on(async move {
            begin
                .call(|_| BeginEpoch::Request {
                    cnc_id: cnc_id.clone(),
                    actor: format!("cnc_{cnc_id}"),
                    unrecorded: reports.clone(),
                })
                .await
        })??;
        if !epoch.accepted {
            anyhow::bail!("the state manager refused a new epoch: {}", epoch.error);
        }
        lock(&self.unreported).retain(|r| !unrecorded.contains(r));
        lock(&self.live).epoch = epoch.epoch;
        tracing::info!(cnc = %p.cnc_id, epoch = epoch.epoch, reported = unrecorded.len(), "active");
        // Find the store's transitions now, not at the first pick.
        self.active_tasks
            .push(transition.await_server_task(crate::kit::call::SERVER_WAIT));

        let ctx = Ctx {
            g: g.clone(),
            p: p.clone(),
            live: self.live.clone(),
            faults: self.faults.clone(),
            counters: self.counters.clone(),
            transition,
            alerts,
            unreported: self.unreported.clone(),
        };
        self.active_tasks.push(tokio::spawn(async move {
            while let Some(req) = goals.next().await {
                let from = Vector3::from(lock(&ctx.live).machine_mm);
                let verdict = {
                    let l = lock(&ctx.live);
                    check_goal(&req.goal, &ctx.p, &l, from, wall_now_s())
                };
                if let Err(why) = verdict {
                    ctx.counters.add(REJECTED, 1);
                    tracing::info!(trace_id = %req.goal.object_id.uuid.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()).map(|b| trace_id(&b)).unwrap_or_default(), "pick rejected: {why}");
                    let _ = req.reject();
                    continue;
                }
                let goal = req.goal.clone();
                let Ok((handle, _cancel)) = req.accept() else {
                    continue;
                };
                let mut handle = GoalHandle(handle);
                {
                    let mut l = lock(&ctx.live);
                    l.busy = true;
                    l.current = goal.object_id.uuid.clone().try_into().unwrap_or([0; 16]);
                }
                let (ctx2, results) = (ctx.clone(), results.clone());
                tokio::spawn(async move {
                    let (result, published) = ctx2.run(&goal, |ph, eta| handle.feedback(ph, eta)).await;
                    if let Some(pr) = published {
                        let _ = results.publish(&pr);
                    }
                    {
                        let mut l = lock(&ctx2.live);
                        l.busy = false;
                        l.current = [0; 16];
                    }
                    let ok = matches!(result.outcome.value, PICKED_V | DROPPED_V | MISSED_V);
                    let _ = if ok {
                        handle.0.succeed(result)
                    } else {
                        handle.0.abort(result)
                    };
                });
            }
        }));
        Ok(())
    }

    fn deactivate(&mut self) -> anyhow::Result<()> {
        // No new goals; a pick in progress is given its own bound to finish.
        for t in self.active_tasks.drain(..) {
            t.abort();
        }
        let deadline =
            Instant::now() + Duration::from_secs_f64(self.params.get().motion_wait_for_trigger_s);
        while lock(&self.live).busy && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if lock(&self.live).busy {
            if let Some(g) = lock(&self.grbl).clone() {
                block_on(async move { g.stop_safely(super::grbl::client::STOP_WAIT).await })?;
            }
        }
        Ok(())
    }

    fn release(&mut self) {
        self.close();
    }
}

/// A motion controller's `main`.
pub fn main() {
    node::main::<MotionParams, _, _>("cnc_1", "/cell", |c| Ok(MotionNode::new(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pick_outcome_is_retried_at_least_each_second_until_it_is_given_up() {
        let waits: Vec<Duration> = record_waits().take(6).collect();
        let ms: Vec<u128> = waits.iter().map(|w| w.as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 1000, 1000, 1000]);
        // A store back after a restart's 4 s is asked again within 1 s,
        // and tried about 30 times before RECORD_FOR runs out.
        let mut at = Duration::ZERO;
        let attempts = record_waits()
            .take_while(|w| {
                at += *w;
                at < RECORD_FOR
            })
            .count();
        assert!((28..=31).contains(&attempts), "{attempts}");
        assert!(record_waits()
            .take(100)
            .all(|w| w <= Duration::from_secs(1)));
    }

    #[test]
    fn a_board_at_its_power_on_zero_after_standing_elsewhere_lost_power() {
        let inside = Some([-120.5, -330.0, -1.0]);
        assert!(powered_off_since(inside, [0.0; 3]));
        assert!(powered_off_since(inside, [0.0004, -0.0004, 0.0]));
        // Kept its position through the reset, or anywhere but 0.
        assert!(!powered_off_since(inside, [-120.5, -330.0, -1.0]));
        assert!(!powered_off_since(inside, [-0.002, 0.0, 0.0]));
        assert!(!powered_off_since(inside, [0.0, 0.0, -5.0]));
        // Nothing known to compare with: a process started afresh, or an
        // operator's unlock.
        assert!(!powered_off_since(None, [0.0; 3]));
        assert!(!powered_off_since(Some([0.0; 3]), [0.0; 3]));
    }

    #[test]
    fn an_outcome_is_raised_unless_the_store_holds_it_or_the_next_epoch_reports_it() {
        let refused = |holds| NotRecorded {
            why: "expected PICKING, but the object is MISSED".into(),
            holds: Some(holds),
        };
        assert_eq!(
            unrecorded("t", ObjState::Missed, &refused(ObjState::Missed)),
            Unrecorded::Held
        );
        assert_eq!(
            unrecorded("t", ObjState::Picked, &refused(ObjState::Missed)),
            Unrecorded::Raise(
                "the pick of t ended PICKED, which the state manager did not record \
                 (it holds MISSED): expected PICKING, but the object is MISSED"
                    .into()
            )
        );
        // Refused as stale with the object still PICKING: the next epoch
        // reports it.
        assert_eq!(
            unrecorded("t", ObjState::Dropped, &refused(ObjState::Picking)),
            Unrecorded::NextEpoch
        );
        let unanswered = NotRecorded {
            why: "no reply within 2000 ms".into(),
            holds: None,
        };
        assert_eq!(
            unrecorded("t", ObjState::Missed, &unanswered),
            Unrecorded::Raise(
                "the pick of t ended MISSED, which the state manager did not record: \
                 no reply within 2000 ms"
                    .into()
            )
        );
    }
}
