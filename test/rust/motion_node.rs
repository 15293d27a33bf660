//! The motion controller node `cnc_1` on real DDS, in one process with the
//! state manager, driving the GRBL emulator on a PTY in the simulated
//! world: bring-up, picks through the PickObject action recorded in the
//! state manager, a hostile goal refused with nothing sent, and the e-stop.

mod common;

use cncpick::kit::call::{call, send_goal};
use cncpick::kit::lifecycle::State;
use cncpick::kit::node::ServedNode;
use cncpick::kit::spin::create_node;
use cncpick::kit::testing::DomainLease;
use cncpick::motion::node::MotionNode;
use cncpick::motion::params::MotionParams;
use cncpick::msgs::action::PickObject;
use cncpick::msgs::msg::PickOutcome;
use cncpick::msgs::srv::{GetObject, RegisterObject, TransitionObject};
use cncpick::sim::params::SimParams;
use cncpick::sim::truth::EventKind;
use cncpick::state::lifecycle::ObjState;
use cncpick::state::node::StateNode;
use cncpick::state::params::StateParams;
use common::PickCell;
use nalgebra::Vector3;
use r2r::QosProfile;
use std::time::Duration;

const CALL: Duration = Duration::from_secs(5);

fn time_of(s: f64) -> r2r::builtin_interfaces::msg::Time {
    cncpick::kit::time::from_duration(Duration::from_secs_f64(s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picks_through_the_action_are_recorded_and_a_hostile_goal_moves_nothing() {
    cncpick::kit::app::init_tracing_at(Some("info"));
    let lease = DomainLease::acquire().unwrap();
    std::env::set_var("ROS_DOMAIN_ID", lease.id.to_string());
    let dir = common::temp_dir("motion_node", "picks");
    let cell = PickCell::start(
        SimParams {
            seed: 11,
            arrival_rate_per_min: 60.0,
            burst_probability: 0.0,
            ..SimParams::default()
        },
        1.0,
    );
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
    // Objects are handed over as soon as they are on the belt (the test
    // stands in for the scheduler): allow a long wait for them.
    let params = MotionParams {
        port: cell.emu.path().into(),
        motion_wait_for_trigger_s: 15.0,
        ..MotionParams::default()
    };
    let picker = params.picker();
    let cnc =
        ServedNode::start(&ctx, "cnc_1", "/cell", params, |c| Ok(MotionNode::new(c))).unwrap();
    assert!(cnc.change_state("configure").await, "configure failed");
    assert!(cnc.change_state("activate").await, "activate failed");

    let probe = create_node(&ctx, "probe", "/cell").unwrap();
    let (register, transition, get, action) = {
        let mut n = probe.lock().unwrap();
        let q = QosProfile::services_default;
        (
            n.create_client::<RegisterObject::Service>("/cell/state_manager/register_object", q())
                .unwrap(),
            n.create_client::<TransitionObject::Service>(
                "/cell/state_manager/transition_object",
                q(),
            )
            .unwrap(),
            n.create_client::<GetObject::Service>("/cell/state_manager/get_object", q())
                .unwrap(),
            n.create_action_client::<PickObject::Action>("/cell/cnc_1/pick")
                .unwrap(),
        )
    };
    let mut spinner = cncpick::kit::spin::Spinner::start(probe.clone());

    // Registers a new object and assigns it to CNC 1 (epoch 1).
    let assign = |k: u32| {
        let (register, transition) = (&register, &transition);
        async move {
            let id = *uuid::Uuid::new_v4().as_bytes();
            let mut r = RegisterObject::Request {
                request_id: format!("reg-{k}"),
                actor: "test".into(),
                ..Default::default()
            };
            r.object_id.uuid = id.to_vec();
            assert!(call(register, "register", &r, CALL).await.unwrap().accepted);
            let mut t = TransitionObject::Request {
                request_id: format!("assign-{k}"),
                actor: "test".into(),
                cnc_id: "1".into(),
                epoch: 1,
                ..Default::default()
            };
            t.object_id.uuid = id.to_vec();
            t.expected_state.id = ObjState::Detected.id();
            t.new_state.id = ObjState::Assigned.id();
            let a = call(transition, "transition", &t, CALL).await.unwrap();
            assert!(a.accepted, "{}", a.error);
            id
        }
    };

    // A hostile goal: across the belt beyond the machine's Y travel.
    let before = cell.emu.snapshot().position_mm;
    let id = assign(0).await;
    let mut g = PickObject::Goal {
        epoch: 1,
        class_id: "red_box".into(),
        ..Default::default()
    };
    g.object_id.uuid = id.to_vec();
    let now = cell.clock.now().as_secs_f64();
    g.position.header.stamp =
        time_of(cncpick::kit::time::to_duration(&cncpick::kit::time::wall_now()).as_secs_f64());
    g.position.point.x = 1.9;
    g.position.point.y = -0.5;
    g.position.point.z = 0.04;
    g.velocity.x = 0.2;
    let refused = send_goal(&action, "pick", g, CALL).await;
    assert!(
        refused.is_err(),
        "a goal outside the workspace was accepted"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cell.emu.snapshot().position_mm, before, "the machine moved");
    let _ = now;

    // Real objects, from the world's truth (standing in for the tracker).
    let mut picked = Vec::new();
    let mut skip = Vec::new();
    let mut k = 1;
    while picked.len() < 3 {
        assert!(k < 15, "too many attempts");
        let at = Vector3::from(cell.emu.snapshot().position_mm);
        let Some((truth_id, job, class)) = cell.next_target(&picker, at, &skip) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        skip.push(truth_id);
        let id = assign(k).await;
        k += 1;
        // The world's clock and the wall clock run together (scale 1): the
        // goal is stamped in wall time, as the tracker's tracks are.
        let wall = cncpick::kit::time::to_duration(&cncpick::kit::time::wall_now()).as_secs_f64();
        let offset = wall - cell.clock.now().as_secs_f64();
        let mut g = PickObject::Goal {
            epoch: 1,
            class_id: class,
            ..Default::default()
        };
        g.object_id.uuid = id.to_vec();
        g.position.header.stamp = time_of(job.traj.t0_s + offset);
        g.position.point.x = job.traj.x_m;
        g.position.point.y = job.traj.y_m;
        g.position.point.z = job.height_m;
        g.velocity.x = job.traj.vx_mps;
        let Ok((_goal, result, _feedback)) = send_goal(&action, "pick", g, CALL).await else {
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
        let mut q = GetObject::Request::default();
        q.object_id.uuid = id.to_vec();
        let rec = call(&get, "get", &q, CALL).await.unwrap();
        assert_eq!(rec.object.state.id, ObjState::Picked.id());
        assert_eq!((rec.object.cnc_id.as_str(), rec.object.epoch), ("1", 1));
        picked.push(truth_id);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = cell.events.lock().unwrap().clone();
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
        let mut n = probe.lock().unwrap();
        n.create_client::<r2r::std_srvs::srv::Trigger::Service>(
            "/cell/cnc_1/estop",
            QosProfile::services_default(),
        )
        .unwrap()
    };
    let r = call(
        &estop,
        "estop",
        &r2r::std_srvs::srv::Trigger::Request::default(),
        CALL,
    )
    .await
    .unwrap();
    assert!(
        r.success && r.message.contains("feed hold written"),
        "{}",
        r.message
    );
    let left = async {
        while cnc.state() == State::Active {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), left)
        .await
        .expect("still Active after the e-stop");
    assert!(!cell.emu.snapshot().vacuum_on);
    spinner.stop();
    cnc.stop().await;
    state.stop().await;
}
