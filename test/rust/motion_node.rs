//! The motion controller node `cnc_1` on real DDS, in one process with the
//! state manager, driving the GRBL emulator on a PTY in the simulated
//! world: bring-up, picks through the PickObject action recorded in the
//! state manager, a hostile goal refused with nothing sent, faults in the
//! middle of a pick, and the e-stop.

mod common;

use cncpick::kit::call::{call, send_goal};
use cncpick::kit::lifecycle::State;
use cncpick::kit::testing::DomainLease;
use cncpick::kit::time::{from_seconds, wall_now_s};
use cncpick::motion::params::MotionParams;
use cncpick::msgs::action::PickObject;
use cncpick::msgs::msg::{Alert, PickOutcome};
use cncpick::sim::grbl::machine::{Config, State as MachineState};
use cncpick::sim::harness::PickCell;
use cncpick::sim::node_cell::NodeCell;
use cncpick::sim::params::SimParams;
use cncpick::sim::truth::EventKind;
use cncpick::state::lifecycle::ObjState;
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CALL: Duration = Duration::from_secs(5);

/// The harness's cell, state manager, `cnc_1` and probe, in a DDS domain
/// of its own.
struct Rig {
    c: NodeCell,
    _lease: DomainLease,
    /// Last: the cell is dropped (its nodes stopped) before its folder.
    _dir: common::Scratch,
}

impl Rig {
    async fn start(tag: &str, homing: bool) -> Rig {
        // Objects are handed over as soon as they are on the belt (the
        // test stands in for the scheduler): allow a long wait for them.
        let motion = MotionParams {
            motion_wait_for_trigger_s: 15.0,
            ..MotionParams::default()
        };
        Self::start_with(tag, homing, motion).await
    }

    async fn start_with(tag: &str, homing: bool, motion: MotionParams) -> Rig {
        cncpick::kit::app::init_tracing_at(Some("info"));
        let lease = DomainLease::acquire().unwrap();
        std::env::set_var("ROS_DOMAIN_ID", lease.id.to_string());
        let dir = common::temp_dir("motion_node", tag);
        // Homing as the simulated cell's boards do it (sim.cnc_homing_*).
        let board = Config::default();
        let sim = SimParams {
            seed: 11,
            arrival_rate_per_min: 60.0,
            burst_probability: 0.0,
            cnc_homing: homing,
            ..SimParams::default()
        };
        let c = NodeCell::start(&dir, sim, board, motion).await.unwrap();
        Rig {
            c,
            _lease: lease,
            _dir: dir,
        }
    }

    async fn assign(&mut self, epoch: u64) -> [u8; 16] {
        self.c.assign(epoch).await.unwrap()
    }

    async fn state_of(&self, id: [u8; 16]) -> u8 {
        self.c.state_of(id).await.unwrap()
    }

    async fn epoch_above(&self, min: u64) -> u64 {
        self.c
            .epoch_above(min, Duration::from_secs(30))
            .await
            .unwrap()
    }

    async fn next_goal(
        &mut self,
        epoch: u64,
        skip: &mut Vec<u64>,
    ) -> (u64, [u8; 16], PickObject::Goal) {
        self.c.next_goal(epoch, skip).await.unwrap()
    }

    async fn stop(self) {
        self.c.stop().await;
    }

    /// Hands the node objects in `epoch` until one is picked, and checks
    /// that the store recorded it PICKED (at most 30 objects in `skip`).
    async fn picks_on(&mut self, epoch: u64, skip: &mut Vec<u64>) {
        loop {
            assert!(skip.len() < 30, "too many attempts");
            let (_, id, g) = self.next_goal(epoch, skip).await;
            let sent = send_goal(&self.c.action, "pick", g, CALL, &AtomicBool::new(false)).await;
            let Ok((_goal, result, _feedback)) = sent else {
                continue;
            };
            let (_, r) = tokio::time::timeout(Duration::from_secs(30), result)
                .await
                .unwrap()
                .unwrap();
            if r.outcome.value == PickOutcome::PICKED as u8 {
                assert_eq!(self.state_of(id).await, ObjState::Picked.id());
                return;
            }
        }
    }

    /// Every alert heard on the cell's alerts topic from now on, and the
    /// task that listens.
    fn alerts(&self) -> (Arc<Mutex<Vec<Alert>>>, tokio::task::JoinHandle<()>) {
        let heard: Arc<Mutex<Vec<Alert>>> = Arc::default();
        let mut alerts = self
            .c
            .probe
            .lock()
            .subscribe::<Alert>(cncpick::kit::alerts::TOPIC, cncpick::kit::alerts::qos())
            .unwrap();
        let sink = heard.clone();
        let listener = tokio::spawn(async move {
            while let Some(a) = alerts.next().await {
                sink.lock().unwrap().push(a);
            }
        });
        (heard, listener)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picks_through_the_action_are_recorded_and_a_hostile_goal_moves_nothing() {
    let mut rig = Rig::start("picks", false).await;
    // A hostile goal: across the belt beyond the machine's Y travel.
    let before = rig.c.cell.emu().snapshot().position_mm;
    let id = rig.assign(1).await;
    let mut g = PickObject::Goal {
        epoch: 1,
        class_id: "red_box".into(),
        ..Default::default()
    };
    g.object_id.uuid = id.to_vec();
    g.position.header.stamp = from_seconds(wall_now_s());
    g.position.point.x = 1.9;
    g.position.point.y = -0.5;
    g.position.point.z = 0.04;
    g.velocity.x = 0.2;
    let refused = send_goal(&rig.c.action, "pick", g, CALL, &AtomicBool::new(false)).await;
    assert!(
        refused.is_err(),
        "a goal outside the workspace was accepted"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.c.cell.emu().snapshot().position_mm,
        before,
        "the machine moved"
    );
    assert_eq!(rig.state_of(id).await, ObjState::Assigned.id());

    // One flag for the goals, as the scheduler keeps one per CNC: after an
    // accepted goal, the next is sent without waiting for the server.
    let matched = AtomicBool::new(false);
    let (mut picked, mut skip) = (Vec::new(), Vec::new());
    while picked.len() < 3 {
        assert!(skip.len() < 15, "too many attempts");
        let (truth_id, id, g) = rig.next_goal(1, &mut skip).await;
        let sent = send_goal(&rig.c.action, "pick", g, CALL, &matched).await;
        assert_eq!(matched.load(Ordering::Acquire), sent.is_ok());
        let Ok((_goal, result, _feedback)) = sent else {
            continue; // no longer reachable by the time it arrived
        };
        let (_, r) = tokio::time::timeout(Duration::from_secs(20), result)
            .await
            .unwrap()
            .unwrap();
        if r.outcome.value == PickOutcome::ABORTED as u8 {
            // The approach window guard (a loaded machine ran late): the
            // object was never touched; the next one is tried.
            eprintln!("pick abandoned: {}", r.error);
            continue;
        }
        assert_eq!(r.outcome.value, PickOutcome::PICKED as u8, "{}", r.error);
        assert_eq!(rig.state_of(id).await, ObjState::Picked.id());
        picked.push(truth_id);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = rig.c.cell.events.lock().unwrap().clone();
    for id in &picked {
        assert!(
            events
                .iter()
                .any(|e| e.object_id == *id && e.kind == EventKind::Binned),
            "object {id} not binned"
        );
    }

    // E-stop: the feed hold goes out at once, the reset turns the vacuum
    // off, and the node leaves Active through its error transition.
    let estop = rig.c.trigger("estop").unwrap();
    let req = r2r::std_srvs::srv::Trigger::Request::default();
    let r = call(&estop, "estop", &req, CALL).await.unwrap();
    assert!(
        r.success && r.message.contains("feed hold written"),
        "{}",
        r.message
    );
    let left = async {
        while rig.c.cnc.state() == State::Active {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), left)
        .await
        .expect("still Active after the e-stop");
    assert!(!rig.c.cell.emu().snapshot().vacuum_on);
    // Latched: the node does not bring itself back (that would move the
    // machine) until someone configures it again.
    assert!(rig.c.cnc.change_state("configure").await);
    assert!(rig.c.cnc.change_state("activate").await);
    // Each activation serves the pick action anew; the servers of the
    // activations before it are gone (r2r patch), not left taking goal
    // requests they drop.
    for _ in 0..2 {
        assert!(rig.c.cnc.change_state("deactivate").await);
        assert!(rig.c.cnc.change_state("activate").await);
    }
    let servers = || {
        let n = rig.c.probe.lock();
        n.get_publishers_info_by_topic("/cell/cnc_1/pick/_action/status", false)
            .map(|v| v.len())
            .unwrap_or(usize::MAX)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while servers() != 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(servers(), 1, "pick action servers after four activations");
    rig.stop().await;
}

/// With homing disabled, an alarm that locks the board (a hard limit)
/// cannot be cleared by the node: configure is refused, saying why, until
/// an operator calls `unlock` (`$X`, served while unconfigured too); then
/// the node's own recovery brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_hard_limit_without_homing_only_the_unlock_service_clears_the_lock() {
    let rig = Rig::start("unlock", false).await;
    let epoch = rig.epoch_above(0).await;
    rig.c.cell.emu().raise_alarm(1);
    let left = async {
        while rig.c.cnc.state() == State::Active {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), left)
        .await
        .expect("still Active after ALARM:1");
    assert!(
        !rig.c.cnc.change_state("configure").await,
        "configured with the board in alarm lock"
    );
    assert_eq!(rig.c.cell.emu().snapshot().state, MachineState::Alarm);
    let unlock = rig.c.trigger("unlock").unwrap();
    let req = r2r::std_srvs::srv::Trigger::Request::default();
    let r = call(&unlock, "unlock", &req, CALL).await.unwrap();
    assert!(r.success, "{}", r.message);
    assert_eq!(rig.c.cell.emu().snapshot().state, MachineState::Idle);
    rig.epoch_above(epoch).await;
    rig.stop().await;
}

/// Without homing, a board that lost power while its cable was out boots
/// unlocked and counts from 0 where its gantry stands. Plugged in again,
/// it is refused at configure, and nothing moves, until an operator's
/// unlock; then the node brings it up. (`reconnect_attempts` 0: the node
/// does not reconfigure itself, so each configure is the test's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_homing_a_board_that_lost_power_is_refused_until_an_unlock() {
    let motion = MotionParams {
        reconnect_attempts: 0,
        ..MotionParams::default()
    };
    let rig = Rig::start_with("power", false, motion).await;
    let epoch = rig.epoch_above(0).await;
    let stood_mm = rig.c.cell.emu().snapshot().position_mm;
    rig.c.cell.unplug();
    let released = async {
        while rig.c.cnc.state() != State::Unconfigured {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), released)
        .await
        .expect("not Unconfigured with the port gone");
    rig.c.cell.plug_in().unwrap();
    assert!(
        !rig.c.cnc.change_state("configure").await,
        "configured a board that lost power, taking its zero from where it stood"
    );
    assert_eq!(rig.c.cnc.state(), State::Unconfigured);
    let board = rig.c.cell.emu().snapshot();
    assert_eq!(board.state, MachineState::Idle, "the board is not locked");
    assert_eq!(board.position_mm, stood_mm, "the gantry moved");
    let unlock = rig.c.trigger("unlock").unwrap();
    let req = r2r::std_srvs::srv::Trigger::Request::default();
    let r = call(&unlock, "unlock", &req, CALL).await.unwrap();
    assert!(r.success, "{}", r.message);
    assert!(
        rig.c.cnc.change_state("configure").await,
        "refused after the unlock"
    );
    assert!(rig.c.cnc.change_state("activate").await);
    rig.epoch_above(epoch).await;
    rig.stop().await;
}

/// Faults in the middle of a pick: each ends with the machine stopped and
/// the vacuum off, the object's state final (never left in PICKING), and
/// the node back in Active through its lifecycle (homing enabled, so it
/// re-homes after an alarm, and after the board is unplugged and plugged
/// in again). Line noise is not a fault: that pick goes on, the last one,
/// after the node has recovered from all the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_mid_pick_end_safe_with_the_object_settled_and_the_node_recovers() {
    let mut rig = Rig::start("faults", true).await;
    let mut skip = Vec::new();
    type Inject = fn(&PickCell);
    const UNPLUGGED: &str = "the PTY closed";
    let faults: [(&str, Inject, bool); 4] = [
        ("error:N mid-sequence", |c| c.emu().fail_next_line(20), true),
        ("alarm", |c| c.emu().raise_alarm(1), true),
        (UNPLUGGED, |c| c.unplug(), true),
        // Last: the node picks again after all of the above.
        (
            "garbage",
            |c| c.emu().write_garbage(b"\xff\xfe#%garbage\r\n".to_vec()),
            false,
        ),
    ];
    for (name, inject, is_fault) in faults {
        let mut done = false;
        while !done {
            assert!(skip.len() < 30, "{name}: too many attempts");
            let epoch = rig.epoch_above(0).await;
            let (_, id, g) = rig.next_goal(epoch, &mut skip).await;
            let sent = send_goal(&rig.c.action, "pick", g, CALL, &AtomicBool::new(false)).await;
            let Ok((_goal, result, mut feedback)) = sent else {
                continue;
            };
            // Inject once the approach has started.
            let fb = tokio::time::timeout(Duration::from_secs(20), feedback.next()).await;
            assert!(matches!(fb, Ok(Some(_))), "{name}: no feedback");
            inject(&rig.c.cell);
            let (_, r) = tokio::time::timeout(Duration::from_secs(30), result)
                .await
                .unwrap()
                .unwrap();
            let state = rig.state_of(id).await;
            assert_ne!(state, ObjState::Picking.id(), "{name}: left in PICKING");
            if !is_fault {
                if r.outcome.value == PickOutcome::ABORTED as u8 {
                    continue;
                }
                assert_eq!(
                    r.outcome.value,
                    PickOutcome::PICKED as u8,
                    "{name}: {}",
                    r.error
                );
                assert_eq!(state, ObjState::Picked.id());
            } else {
                assert_eq!(
                    r.outcome.value,
                    PickOutcome::FAULT as u8,
                    "{name}: {}",
                    r.error
                );
                assert_eq!(state, ObjState::Missed.id(), "{name}");
                if name == UNPLUGGED {
                    // Powered off: nothing is held. The node leaves Active
                    // and keeps trying to reconnect; a board plugged in
                    // again behind the same link is found.
                    assert!(!rig.c.cell.core.lock().unwrap().holding(0));
                    let left = async {
                        while rig.c.cnc.state() == State::Active {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::time::timeout(Duration::from_secs(5), left)
                        .await
                        .expect("still Active with the port gone");
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    assert_ne!(rig.c.cnc.state(), State::Active, "Active with no board");
                    rig.c.cell.plug_in().unwrap();
                } else {
                    let snap = rig.c.cell.emu().snapshot();
                    assert!(!snap.vacuum_on, "{name}: vacuum left on");
                }
                // Back through the lifecycle with a new epoch.
                rig.epoch_above(epoch).await;
            }
            done = true;
        }
    }
    rig.stop().await;
}

/// A pick whose object the state manager settled while it ran (the CNC's
/// new epoch ends a pick in flight MISSED, and so does expiry): the
/// CNC's outcome is refused, and besides its log line the CNC raises
/// `pick_outcome_unrecorded`, naming the object, what the pick did and
/// what the store holds instead, so the bins can be reconciled with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_the_store_settled_meanwhile_is_raised_as_an_alert() {
    let mut rig = Rig::start("unrecorded", false).await;
    let (heard, listener) = rig.alerts();
    let mut skip = Vec::new();
    loop {
        assert!(skip.len() < 15, "too many attempts");
        let (_, id, g) = rig.next_goal(1, &mut skip).await;
        let sent = send_goal(&rig.c.action, "pick", g, CALL, &AtomicBool::new(false)).await;
        let Ok((_goal, result, mut feedback)) = sent else {
            continue;
        };
        // The approach has begun, so the object is PICKING; the store
        // settles it meanwhile.
        let fb = tokio::time::timeout(Duration::from_secs(20), feedback.next()).await;
        assert!(matches!(fb, Ok(Some(_))), "no feedback");
        assert_eq!(rig.state_of(id).await, ObjState::Picking.id());
        rig.c
            .move_held(id, 1, (ObjState::Picking, ObjState::Missed))
            .await
            .unwrap();
        let (_, r) = tokio::time::timeout(Duration::from_secs(30), result)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rig.state_of(id).await, ObjState::Missed.id());
        if r.outcome.value != PickOutcome::PICKED as u8 {
            // Aborted or missed: what the store holds, nothing to raise.
            eprintln!("pick ended {}: {}", r.outcome.value, r.error);
            continue;
        }
        let raised = async {
            loop {
                if let Some(a) = heard
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|a| a.object_id.uuid == id.to_vec())
                {
                    return a.clone();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let a = tokio::time::timeout(Duration::from_secs(5), raised)
            .await
            .expect("no alert for the pick's unrecorded outcome");
        assert_eq!(a.name, "pick_outcome_unrecorded");
        assert_eq!((a.node.as_str(), a.severity), ("cnc_1", Alert::ERROR as u8));
        assert!(
            a.message.contains("ended PICKED") && a.message.contains("(it holds MISSED)"),
            "{}",
            a.message
        );
        break;
    }
    // The CNC goes on: the next pick is recorded as it happened.
    rig.picks_on(1, &mut skip).await;
    listener.abort();
    rig.stop().await;
}

/// The state manager restarted (its recovery) while a pick ran: the CNC's
/// epoch rises, so the outcome is refused as stale, but the object is left
/// PICKING for the CNC. The CNC keeps the outcome and reports it with its
/// next epoch (its re-activation, as the manager does after the state
/// manager's), which records it as the pick ended: the store and the bins
/// agree, and nothing is raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_fenced_by_the_state_managers_recovery_is_recorded_with_the_next_epoch() {
    use cncpick::state::lifecycle::after_pick;
    let mut rig = Rig::start("reported", false).await;
    let (heard, listener) = rig.alerts();
    let mut skip = Vec::new();
    let (id, r) = loop {
        assert!(skip.len() < 15, "too many attempts");
        let (_, id, g) = rig.next_goal(1, &mut skip).await;
        let sent = send_goal(&rig.c.action, "pick", g, CALL, &AtomicBool::new(false)).await;
        let Ok((_goal, result, mut feedback)) = sent else {
            continue;
        };
        // The approach has begun, so the object is PICKING; the state
        // manager restarts meanwhile (deactivated and activated: recovery).
        let fb = tokio::time::timeout(Duration::from_secs(20), feedback.next()).await;
        assert!(matches!(fb, Ok(Some(_))), "no feedback");
        assert!(rig.c.state.change_state("deactivate").await);
        assert!(rig.c.state.change_state("activate").await);
        assert_eq!(rig.state_of(id).await, ObjState::Picking.id());
        let (_, r) = tokio::time::timeout(Duration::from_secs(30), result)
            .await
            .unwrap()
            .unwrap();
        break (id, r);
    };
    // Refused as stale: still PICKING, the outcome kept by the CNC.
    assert_eq!(
        rig.state_of(id).await,
        ObjState::Picking.id(),
        "{}",
        r.error
    );
    // The manager's re-activation of the fenced CNC: a new epoch.
    assert!(rig.c.cnc.change_state("deactivate").await);
    assert!(rig.c.cnc.change_state("activate").await);
    let epoch = rig.epoch_above(2).await;
    let want = after_pick(r.outcome.value).unwrap();
    assert_eq!(
        rig.state_of(id).await,
        want.id(),
        "the pick ended {want} ({}), recorded with epoch {epoch}",
        r.error
    );
    let raised: Vec<_> = heard
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.object_id.uuid == id.to_vec())
        .map(|a| a.message.clone())
        .collect();
    assert!(raised.is_empty(), "{raised:?}");
    // The new epoch picks on, recorded as it happens.
    rig.picks_on(epoch, &mut skip).await;
    listener.abort();
    rig.stop().await;
}
