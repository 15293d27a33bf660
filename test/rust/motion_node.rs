//! The motion controller node `cnc_1` on real DDS, in one process with the
//! state manager, driving the GRBL emulator on a PTY in the simulated
//! world: bring-up, picks through the PickObject action recorded in the
//! state manager, a hostile goal refused with nothing sent, faults in the
//! middle of a pick, and the e-stop.

mod common;

use cncpick::kit::call::{call, send_goal};
use cncpick::kit::lifecycle::State;
use cncpick::kit::node::ServedNode;
use cncpick::kit::spin::{create_node, SharedNode, Spinner};
use cncpick::kit::testing::DomainLease;
use cncpick::motion::node::MotionNode;
use cncpick::motion::params::MotionParams;
use cncpick::motion::pick::Job;
use cncpick::msgs::action::PickObject;
use cncpick::msgs::msg::{CncStatus, PickOutcome};
use cncpick::msgs::srv::{GetObject, RegisterObject, TransitionObject};
use cncpick::sim::grbl::machine::{Config, State as MachineState};
use cncpick::sim::harness::PickCell;
use cncpick::sim::params::SimParams;
use cncpick::sim::truth::EventKind;
use cncpick::state::lifecycle::ObjState;
use cncpick::state::node::StateNode;
use cncpick::state::params::StateParams;
use futures::StreamExt;
use nalgebra::Vector3;
use r2r::QosProfile;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CALL: Duration = Duration::from_secs(5);

fn time_of(s: f64) -> r2r::builtin_interfaces::msg::Time {
    cncpick::kit::time::from_duration(Duration::from_secs_f64(s))
}

fn wall_s() -> f64 {
    cncpick::kit::time::to_duration(&cncpick::kit::time::wall_now()).as_secs_f64()
}

/// The state manager, the world with CNC 1's board, the cnc_1 node, and a
/// probe node with the clients a scheduler would use.
struct Rig {
    _lease: DomainLease,
    cell: PickCell,
    state: ServedNode,
    cnc: ServedNode,
    probe: SharedNode,
    spinner: Spinner,
    register: r2r::Client<RegisterObject::Service>,
    transition: r2r::Client<TransitionObject::Service>,
    get: r2r::Client<GetObject::Service>,
    action: r2r::ActionClient<PickObject::Action>,
    status: Arc<Mutex<Option<CncStatus>>>,
    params: MotionParams,
    next: u32,
}

impl Rig {
    async fn start(tag: &str, homing: bool) -> Rig {
        cncpick::kit::app::init_tracing_at(Some("info"));
        let lease = DomainLease::acquire().unwrap();
        std::env::set_var("ROS_DOMAIN_ID", lease.id.to_string());
        let dir = common::temp_dir("motion_node", tag);
        let board = Config {
            homing_time: Duration::from_millis(300),
            ..Config::default()
        };
        let sim = SimParams {
            seed: 11,
            arrival_rate_per_min: 60.0,
            burst_probability: 0.0,
            cnc_homing: homing,
            ..SimParams::default()
        };
        // The node opens the board through a symlink, as on a cell computer
        // (/dev/serial/by-id/...): a board plugged in again is found there.
        let link = dir.join("cnc_1");
        let cell = PickCell::start_linked(sim, 1.0, board, Some(&link)).unwrap();
        let ctx = r2r::Context::create().unwrap();
        let state = ServedNode::start(
            &ctx,
            "state_manager",
            "/cell",
            StateParams {
                database_path: dir.join("state.sqlite").display().to_string(),
                snapshot_period_s: 0.0,
                ..StateParams::default()
            },
            |c| Ok(StateNode::new(c)),
        )
        .unwrap();
        assert!(state.change_state("configure").await && state.change_state("activate").await);
        // Objects are handed over as soon as they are on the belt (the
        // test stands in for the scheduler): allow a long wait for them.
        let params = MotionParams {
            port: link.display().to_string(),
            motion_wait_for_trigger_s: 15.0,
            homing,
            ..MotionParams::default()
        };
        let p = params.clone();
        let cnc = ServedNode::start(&ctx, "cnc_1", "/cell", p, |c| Ok(MotionNode::new(c))).unwrap();
        assert!(cnc.change_state("configure").await, "configure failed");
        assert!(cnc.change_state("activate").await, "activate failed");
        let probe = create_node(&ctx, "probe", "/cell").unwrap();
        let status = Arc::new(Mutex::new(None));
        let (register, transition, get, action, mut statuses) = {
            let mut n = probe.lock().unwrap();
            let q = QosProfile::services_default;
            (
                n.create_client("/cell/state_manager/register_object", q())
                    .unwrap(),
                n.create_client("/cell/state_manager/transition_object", q())
                    .unwrap(),
                n.create_client("/cell/state_manager/get_object", q())
                    .unwrap(),
                n.create_action_client::<PickObject::Action>("/cell/cnc_1/pick")
                    .unwrap(),
                n.subscribe::<CncStatus>("/cell/cnc_1/status", QosProfile::default())
                    .unwrap(),
            )
        };
        {
            let status = status.clone();
            tokio::spawn(async move {
                while let Some(s) = statuses.next().await {
                    *status.lock().unwrap() = Some(s);
                }
            });
        }
        let spinner = Spinner::start(probe.clone());
        Rig {
            _lease: lease,
            cell,
            state,
            cnc,
            probe,
            spinner,
            register,
            transition,
            get,
            action,
            status,
            params,
            next: 0,
        }
    }

    /// Registers a new object and assigns it to CNC 1 in `epoch`.
    async fn assign(&mut self, epoch: u64) -> [u8; 16] {
        self.next += 1;
        let k = self.next;
        let id = *uuid::Uuid::new_v4().as_bytes();
        let mut r = RegisterObject::Request {
            request_id: format!("reg-{k}"),
            actor: "test".into(),
            ..Default::default()
        };
        r.object_id.uuid = id.to_vec();
        assert!(
            call(&self.register, "register", &r, CALL)
                .await
                .unwrap()
                .accepted
        );
        let mut t = TransitionObject::Request {
            request_id: format!("assign-{k}"),
            actor: "test".into(),
            cnc_id: "1".into(),
            epoch,
            ..Default::default()
        };
        t.object_id.uuid = id.to_vec();
        t.expected_state.id = ObjState::Detected.id();
        t.new_state.id = ObjState::Assigned.id();
        let a = call(&self.transition, "transition", &t, CALL)
            .await
            .unwrap();
        assert!(a.accepted, "{}", a.error);
        id
    }

    async fn state_of(&self, id: [u8; 16]) -> u8 {
        let mut q = GetObject::Request::default();
        q.object_id.uuid = id.to_vec();
        call(&self.get, "get", &q, CALL)
            .await
            .unwrap()
            .object
            .state
            .id
    }

    /// The node's epoch once it is Active with an epoch above `min` (as its
    /// status says).
    async fn epoch_above(&self, min: u64) -> u64 {
        let wait = async {
            loop {
                let epoch = self.status.lock().unwrap().as_ref().map_or(0, |s| s.epoch);
                if self.cnc.state() == State::Active && epoch > min {
                    return epoch;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("the node did not come back to Active with a new epoch")
    }

    /// A goal for the next reachable object of a class this CNC bins (from
    /// the world's truth, standing in for the tracker): its truth id, the
    /// state manager's id, and the goal.
    async fn next_goal(
        &mut self,
        epoch: u64,
        skip: &mut Vec<u64>,
    ) -> (u64, [u8; 16], PickObject::Goal) {
        let picker = self.params.picker();
        let (truth_id, job, class): (u64, Job, String) = loop {
            let at = Vector3::from(self.cell.emu().snapshot().position_mm);
            if let Some(t) = self.cell.next_target(&picker, at, skip) {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        skip.push(truth_id);
        let id = self.assign(epoch).await;
        // The world's clock and the wall clock run together (scale 1): the
        // goal is stamped in wall time, as the tracker's tracks are.
        let offset = wall_s() - self.cell.clock.now().as_secs_f64();
        let mut g = PickObject::Goal {
            epoch,
            class_id: class,
            ..Default::default()
        };
        g.object_id.uuid = id.to_vec();
        g.position.header.stamp = time_of(job.traj.t0_s + offset);
        g.position.point.x = job.traj.x_m;
        g.position.point.y = job.traj.y_m;
        g.position.point.z = job.height_m;
        g.velocity.x = job.traj.vx_mps;
        (truth_id, id, g)
    }

    async fn stop(mut self) {
        self.spinner.stop();
        self.cnc.stop().await;
        self.state.stop().await;
        drop(self.probe);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picks_through_the_action_are_recorded_and_a_hostile_goal_moves_nothing() {
    let mut rig = Rig::start("picks", false).await;
    // A hostile goal: across the belt beyond the machine's Y travel.
    let before = rig.cell.emu().snapshot().position_mm;
    let id = rig.assign(1).await;
    let mut g = PickObject::Goal {
        epoch: 1,
        class_id: "red_box".into(),
        ..Default::default()
    };
    g.object_id.uuid = id.to_vec();
    g.position.header.stamp = time_of(wall_s());
    g.position.point.x = 1.9;
    g.position.point.y = -0.5;
    g.position.point.z = 0.04;
    g.velocity.x = 0.2;
    let refused = send_goal(&rig.action, "pick", g, CALL).await;
    assert!(
        refused.is_err(),
        "a goal outside the workspace was accepted"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.cell.emu().snapshot().position_mm,
        before,
        "the machine moved"
    );
    assert_eq!(rig.state_of(id).await, ObjState::Assigned.id());

    let (mut picked, mut skip) = (Vec::new(), Vec::new());
    while picked.len() < 3 {
        assert!(skip.len() < 15, "too many attempts");
        let (truth_id, id, g) = rig.next_goal(1, &mut skip).await;
        let Ok((_goal, result, _feedback)) = send_goal(&rig.action, "pick", g, CALL).await else {
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
    let events = rig.cell.events.lock().unwrap().clone();
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
    let estop = {
        let mut n = rig.probe.lock().unwrap();
        n.create_client::<r2r::std_srvs::srv::Trigger::Service>(
            "/cell/cnc_1/estop",
            QosProfile::services_default(),
        )
        .unwrap()
    };
    let req = r2r::std_srvs::srv::Trigger::Request::default();
    let r = call(&estop, "estop", &req, CALL).await.unwrap();
    assert!(
        r.success && r.message.contains("feed hold written"),
        "{}",
        r.message
    );
    let left = async {
        while rig.cnc.state() == State::Active {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), left)
        .await
        .expect("still Active after the e-stop");
    assert!(!rig.cell.emu().snapshot().vacuum_on);
    // Latched: the node does not bring itself back (that would move the
    // machine) until someone configures it again.
    assert!(rig.cnc.change_state("configure").await);
    assert!(rig.cnc.change_state("activate").await);
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
    rig.cell.emu().raise_alarm(1);
    let left = async {
        while rig.cnc.state() == State::Active {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), left)
        .await
        .expect("still Active after ALARM:1");
    assert!(
        !rig.cnc.change_state("configure").await,
        "configured with the board in alarm lock"
    );
    assert_eq!(rig.cell.emu().snapshot().state, MachineState::Alarm);
    let unlock = {
        let mut n = rig.probe.lock().unwrap();
        n.create_client::<r2r::std_srvs::srv::Trigger::Service>(
            "/cell/cnc_1/unlock",
            QosProfile::services_default(),
        )
        .unwrap()
    };
    let req = r2r::std_srvs::srv::Trigger::Request::default();
    let r = call(&unlock, "unlock", &req, CALL).await.unwrap();
    assert!(r.success, "{}", r.message);
    assert_eq!(rig.cell.emu().snapshot().state, MachineState::Idle);
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
            let Ok((_goal, result, mut feedback)) = send_goal(&rig.action, "pick", g, CALL).await
            else {
                continue;
            };
            // Inject once the approach has started.
            let fb = tokio::time::timeout(Duration::from_secs(20), feedback.next()).await;
            assert!(matches!(fb, Ok(Some(_))), "{name}: no feedback");
            inject(&rig.cell);
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
                    assert!(!rig.cell.core.lock().unwrap().holding(0));
                    let left = async {
                        while rig.cnc.state() == State::Active {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::time::timeout(Duration::from_secs(5), left)
                        .await
                        .expect("still Active with the port gone");
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    assert_ne!(rig.cnc.state(), State::Active, "Active with no board");
                    rig.cell.plug_in().unwrap();
                } else {
                    let snap = rig.cell.emu().snapshot();
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
