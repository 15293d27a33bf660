//! A test and benchmark harness for the motion controller node: the
//! [`PickCell`] (world and CNC 1's board on a PTY, behind a symlink), the
//! state manager and the `cnc_1` node on real DDS in this process, and a
//! probe node with the clients a scheduler would use. Objects are
//! registered and assigned in the state manager, then handed to `cnc_1`
//! through its PickObject action, as the scheduler will.

use crate::kit::call::call;
use crate::kit::lifecycle::State;
use crate::kit::node::ServedNode;
use crate::kit::spin::{create_node, SharedNode, Spinner};
use crate::kit::time::{from_seconds, wall_now_s};
use crate::motion::node::MotionNode;
use crate::motion::params::MotionParams;
use crate::motion::pick::Job;
use crate::msgs::action::PickObject;
use crate::msgs::msg::CncStatus;
use crate::msgs::srv::{GetObject, RegisterObject, TransitionObject};
use crate::sim::grbl::machine::Config;
use crate::sim::harness::PickCell;
use crate::sim::params::SimParams;
use crate::state::lifecycle::ObjState;
use anyhow::Context as _;
use futures::StreamExt;
use nalgebra::Vector3;
use r2r::QosProfile;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CALL: Duration = Duration::from_secs(5);

/// The cell, the state manager, `cnc_1`, and a probe with the clients a
/// scheduler would use (ROS_DOMAIN_ID as set by the caller).
pub struct NodeCell {
    pub cell: PickCell,
    pub state: ServedNode,
    pub cnc: ServedNode,
    pub probe: SharedNode,
    spinner: Spinner,
    register: r2r::Client<RegisterObject::Service>,
    transition: r2r::Client<TransitionObject::Service>,
    get: r2r::Client<GetObject::Service>,
    pub action: r2r::ActionClient<PickObject::Action>,
    pub status: Arc<Mutex<Option<CncStatus>>>,
    pub params: MotionParams,
    next: u32,
}

impl NodeCell {
    /// Starts everything in `dir` (the database, the board's link), brings
    /// the state manager and `cnc_1` to Active.
    pub async fn start(
        dir: &Path,
        sim: SimParams,
        board: Config,
        motion: MotionParams,
    ) -> anyhow::Result<NodeCell> {
        // The node opens the board through a symlink, as on a cell computer
        // (/dev/serial/by-id/...): a board plugged in again is found there.
        let link = dir.join("cnc_1");
        let homing = sim.cnc_homing;
        let cell = PickCell::start_linked(sim, 1.0, board, Some(&link))?;
        let ctx = r2r::Context::create()?;
        let state = crate::sim::graph::state_manager(&ctx, dir).await?;
        let params = MotionParams {
            port: link.display().to_string(),
            homing,
            ..motion
        };
        let cnc = ServedNode::start(&ctx, "cnc_1", "/cell", params.clone(), |c| {
            Ok(MotionNode::new(c))
        })?;
        anyhow::ensure!(
            cnc.change_state("configure").await,
            "cnc_1: configure failed"
        );
        anyhow::ensure!(cnc.change_state("activate").await, "cnc_1: activate failed");
        let probe = create_node(&ctx, "probe", "/cell")?;
        let status = Arc::new(Mutex::new(None));
        let (register, transition, get, action, mut statuses) = {
            let mut n = probe.lock();
            let q = QosProfile::services_default;
            (
                n.create_client("/cell/state_manager/register_object", q())?,
                n.create_client("/cell/state_manager/transition_object", q())?,
                n.create_client("/cell/state_manager/get_object", q())?,
                n.create_action_client::<PickObject::Action>("/cell/cnc_1/pick")?,
                n.subscribe::<CncStatus>("/cell/cnc_1/status", QosProfile::default())?,
            )
        };
        {
            let status = status.clone();
            tokio::spawn(async move {
                while let Some(s) = statuses.next().await {
                    *status.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                }
            });
        }
        let spinner = Spinner::start(probe.clone());
        Ok(NodeCell {
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
        })
    }

    /// Registers a new object and assigns it to CNC 1 in `epoch`.
    pub async fn assign(&mut self, epoch: u64) -> anyhow::Result<[u8; 16]> {
        self.next += 1;
        let k = self.next;
        let id = *uuid::Uuid::new_v4().as_bytes();
        let mut r = RegisterObject::Request {
            request_id: format!("reg-{k}"),
            actor: "harness".into(),
            ..Default::default()
        };
        r.object_id.uuid = id.to_vec();
        let a = call(&self.register, "register", &r, CALL).await?;
        anyhow::ensure!(a.accepted, "register: {}", a.error);
        self.move_held(id, epoch, (ObjState::Detected, ObjState::Assigned))
            .await?;
        Ok(id)
    }

    /// Moves object `id`, held by CNC 1 in `epoch`, `from` one state `to`
    /// another in the state manager, as the harness (standing in for
    /// whoever settles an object while its CNC holds it).
    pub async fn move_held(
        &mut self,
        id: [u8; 16],
        epoch: u64,
        (from, to): (ObjState, ObjState),
    ) -> anyhow::Result<()> {
        self.next += 1;
        let mut t = TransitionObject::Request {
            request_id: format!("harness-{}", self.next),
            actor: "harness".into(),
            cnc_id: "1".into(),
            epoch,
            ..Default::default()
        };
        t.object_id.uuid = id.to_vec();
        t.expected_state.id = from.id();
        t.new_state.id = to.id();
        let a = call(&self.transition, "transition", &t, CALL).await?;
        anyhow::ensure!(a.accepted, "{from} -> {to}: {}", a.error);
        Ok(())
    }

    /// The object's state in the state manager.
    pub async fn state_of(&self, id: [u8; 16]) -> anyhow::Result<u8> {
        let mut q = GetObject::Request::default();
        q.object_id.uuid = id.to_vec();
        Ok(call(&self.get, "get", &q, CALL).await?.object.state.id)
    }

    /// The node's epoch once it is Active with an epoch above `min` (as
    /// its status says), waiting at most `bound`.
    pub async fn epoch_above(&self, min: u64, bound: Duration) -> anyhow::Result<u64> {
        let wait = async {
            loop {
                let epoch = self
                    .status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map_or(0, |s| s.epoch);
                if self.cnc.state() == State::Active && epoch > min {
                    return epoch;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(bound, wait)
            .await
            .context("cnc_1 did not come back to Active with a new epoch")
    }

    /// A goal for the next reachable object of a class this CNC bins (from
    /// the world's truth, standing in for the tracker and the scheduler),
    /// registered and assigned: its truth id, the state manager's id, and
    /// the goal.
    pub async fn next_goal(
        &mut self,
        epoch: u64,
        skip: &mut Vec<u64>,
    ) -> anyhow::Result<(u64, [u8; 16], PickObject::Goal)> {
        let picker = self.params.picker();
        let (truth_id, job, class): (u64, Job, String) = loop {
            let at = Vector3::from(self.cell.emu().snapshot().position_mm);
            if let Some(t) = self.cell.next_target(&picker, at, skip) {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        skip.push(truth_id);
        let id = self.assign(epoch).await?;
        // The world's clock and the wall clock run together (scale 1): the
        // goal is stamped in wall time, as the tracker's tracks are.
        let offset = wall_now_s() - self.cell.clock.now().as_secs_f64();
        let mut g = PickObject::Goal {
            epoch,
            class_id: class,
            ..Default::default()
        };
        g.object_id.uuid = id.to_vec();
        g.position.header.stamp = from_seconds(job.traj.t0_s + offset);
        g.position.point.x = job.traj.x_m;
        g.position.point.y = job.traj.y_m;
        g.position.point.z = job.height_m;
        g.velocity.x = job.traj.vx_mps;
        Ok((truth_id, id, g))
    }

    /// A probe client of one of `cnc_1`'s Trigger services.
    pub fn trigger(
        &self,
        service: &str,
    ) -> anyhow::Result<r2r::Client<r2r::std_srvs::srv::Trigger::Service>> {
        let mut n = self.probe.lock();
        Ok(n.create_client::<r2r::std_srvs::srv::Trigger::Service>(
            &format!("/cell/cnc_1/{service}"),
            QosProfile::services_default(),
        )?)
    }

    pub async fn stop(mut self) {
        self.spinner.stop();
        self.cnc.stop().await;
        self.state.stop().await;
        drop(self.probe);
    }
}
