//! The simulated cell's node graph in one process, for tests and
//! benchmarks of the scheduler: the `sim` node (world and one GRBL
//! emulator per CNC on a PTY, behind symlinks; no images), the state
//! manager, one `cnc_<id>` per CNC, the tracker and the scheduler, all on
//! real DDS. A truth detector (a perfect detector with 1 mm noise, fed by
//! `sim/truth`) stands in for the camera and the detector. Any CNC node
//! can be killed (stopped: its status, action and services vanish).

use crate::kit::node::ServedNode;
use crate::kit::spin::{create_node, SharedNode, Spinner};
use crate::motion::node::MotionNode;
use crate::motion::params::MotionParams;
use crate::msgs::msg as m;
use crate::sched::node::SchedNode;
use crate::sched::params::SchedParams;
use crate::sim::node::SimNode;
use crate::sim::params::SimParams;
use crate::state::node::StateNode;
use crate::state::params::StateParams;
use crate::tracker::node::TrackerNode;
use crate::tracker::params::TrackerParams;
use futures::StreamExt;
use r2r::QosProfile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Every truth event the sim published: (stamp s, sim id, kind code, CNC).
pub type TruthEvents = Arc<Mutex<Vec<(f64, u64, u8, String)>>>;

/// One object event as heard on `objects/events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub seq: u64,
    pub object_id: [u8; 16],
    pub to: u8,
    pub cnc_id: String,
    /// When it was heard (wall clock), s.
    pub at_s: f64,
}

/// CNC `i`'s motion params as the simulated cell has it.
pub fn motion_params(sim: &SimParams, i: usize) -> MotionParams {
    let id = sim.cnc_ids[i].clone();
    let bins: Vec<usize> = (0..sim.bin_cnc_ids.len())
        .filter(|&b| sim.bin_cnc_ids[b] == id)
        .collect();
    MotionParams {
        cnc_id: id.clone(),
        port: sim.cnc_pty_links[i].clone(),
        origin_x_m: sim.cnc_origin_x_m[i],
        origin_y_m: sim.cnc_origin_y_m[i],
        origin_z_m: sim.cnc_origin_z_m[i],
        reach_x_min_m: sim.cnc_x_min_m[i],
        reach_x_max_m: sim.cnc_x_max_m[i],
        homing: sim.cnc_homing,
        bin_classes: bins.iter().map(|&b| sim.bin_classes[b].clone()).collect(),
        bin_x_m: bins.iter().map(|&b| sim.bin_x_m[b]).collect(),
        bin_y_m: bins.iter().map(|&b| sim.bin_y_m[b]).collect(),
        ..MotionParams::default()
    }
}

/// The state manager on a database in `dir` (`state.sqlite`), Active.
pub async fn state_manager(ctx: &r2r::Context, dir: &Path) -> anyhow::Result<ServedNode> {
    let state = ServedNode::start(
        ctx,
        "state_manager",
        "/cell",
        StateParams {
            database_path: dir.join("state.sqlite").display().to_string(),
            snapshot_period_s: 0.0,
            ..StateParams::default()
        },
        |c| Ok(StateNode::new(c)),
    )?;
    up(&state).await?;
    Ok(state)
}

/// The graph, running.
pub struct SimGraph {
    pub dir: PathBuf,
    pub sim: ServedNode,
    pub state: ServedNode,
    pub cncs: BTreeMap<String, ServedNode>,
    pub tracker: ServedNode,
    pub scheduler: ServedNode,
    pub truth: TruthEvents,
    pub events: Arc<Mutex<Vec<Heard>>>,
    probe: SharedNode,
    spinner: Spinner,
}

/// Brings a served node to Active (configure, activate).
pub async fn up(n: &ServedNode) -> anyhow::Result<()> {
    anyhow::ensure!(
        n.change_state("configure").await,
        "{}: configure failed",
        n.fqn
    );
    anyhow::ensure!(
        n.change_state("activate").await,
        "{}: activate failed",
        n.fqn
    );
    Ok(())
}

impl SimGraph {
    /// Starts the graph in `dir` (the database, the PTY links), in
    /// dependency order, with `sim`'s world and `sched`'s scheduler.
    pub async fn start(dir: &Path, sim: SimParams, sched: SchedParams) -> anyhow::Result<SimGraph> {
        let sim = SimParams {
            publish_images: false,
            cnc_pty_links: sim
                .cnc_ids
                .iter()
                .map(|id| dir.join(format!("cnc_{id}")).display().to_string())
                .collect(),
            ..sim
        };
        let ctx = r2r::Context::create()?;
        let ns = "/cell";
        let sim_node = ServedNode::start(&ctx, "sim", ns, sim.clone(), |c| Ok(SimNode::new(c)))?;
        up(&sim_node).await?;
        let state = state_manager(&ctx, dir).await?;
        let mut cncs = BTreeMap::new();
        for (i, id) in sim.cnc_ids.iter().enumerate() {
            let n = ServedNode::start(
                &ctx,
                &format!("cnc_{id}"),
                ns,
                motion_params(&sim, i),
                |c| Ok(MotionNode::new(c)),
            )?;
            up(&n).await?;
            cncs.insert(id.clone(), n);
        }
        let cfg = sim.config().map_err(anyhow::Error::msg)?;
        let (view_x_min_m, view_x_max_m) = cfg.camera.view_x_m();
        let tracker = ServedNode::start(
            &ctx,
            "tracker",
            ns,
            TrackerParams {
                view_x_min_m,
                view_x_max_m,
                belt_length_m: sim.belt_length_m,
                belt_width_m: sim.belt_width_m,
                lanes: sim.lanes,
                cnc_ids: sim.cnc_ids.clone(),
                cnc_x_min_m: sim.cnc_x_min_m.clone(),
                cnc_x_max_m: sim.cnc_x_max_m.clone(),
                ..TrackerParams::default()
            },
            |c| Ok(TrackerNode::new(c)),
        )?;
        up(&tracker).await?;
        let scheduler = ServedNode::start(
            &ctx,
            "scheduler",
            ns,
            SchedParams {
                cnc_ids: sim.cnc_ids.clone(),
                class_names: sim.class_names.clone(),
                class_height_m: sim.class_height_m.clone(),
                ..sched
            },
            |c| Ok(SchedNode::new(c)),
        )?;
        up(&scheduler).await?;

        // The truth detector, and the truth events kept.
        let probe = create_node(&ctx, "truth_detector", ns)?;
        let (mut truths, detections, mut object_events) = {
            let mut n = probe.lock();
            let reliable = QosProfile::default().reliable().keep_last(100);
            (
                n.subscribe::<m::Truth>("sim/truth", reliable.clone())?,
                n.create_publisher::<m::DetectionArray>("detections", reliable)?,
                n.subscribe::<m::ObjectEvent>("objects/events", crate::kit::qos::events())?,
            )
        };
        let events: Arc<Mutex<Vec<Heard>>> = Default::default();
        {
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(e) = object_events.next().await {
                    let Ok(object_id) = <[u8; 16]>::try_from(e.object_id.uuid.as_slice()) else {
                        continue;
                    };
                    events
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Heard {
                            seq: e.seq,
                            object_id,
                            to: e.to_state.id,
                            cnc_id: e.cnc_id,
                            at_s: crate::kit::time::wall_now_s(),
                        });
                }
            });
        }
        let truth: TruthEvents = Default::default();
        {
            let truth = truth.clone();
            let view = (view_x_min_m, view_x_max_m);
            tokio::spawn(async move {
                use rand::SeedableRng;
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
                while let Some(t) = truths.next().await {
                    {
                        let mut ev = truth.lock().unwrap_or_else(|e| e.into_inner());
                        for e in &t.events {
                            ev.push((
                                crate::kit::time::seconds(&e.stamp),
                                e.sim_id,
                                e.kind,
                                e.cnc_id.clone(),
                            ));
                        }
                    }
                    if !t.delivered {
                        continue;
                    }
                    let msg = truth_detections(&t, view, &mut rng);
                    let _ = detections.publish(&msg);
                }
            });
        }
        let spinner = Spinner::start(probe.clone());
        Ok(SimGraph {
            dir: dir.to_path_buf(),
            sim: sim_node,
            state,
            cncs,
            tracker,
            scheduler,
            truth,
            events,
            probe,
            spinner,
        })
    }

    /// Kills CNC `id`'s node (it stops: no status, no action, no services).
    pub async fn kill_cnc(&mut self, id: &str) {
        if let Some(n) = self.cncs.remove(id) {
            n.stop().await;
        }
    }

    /// Stops everything, downstream first.
    pub async fn stop(mut self) {
        self.spinner.stop();
        self.scheduler.stop().await;
        self.tracker.stop().await;
        for (_, n) in std::mem::take(&mut self.cncs) {
            n.stop().await;
        }
        self.state.stop().await;
        self.sim.stop().await;
        drop(self.probe);
    }
}

/// A perfect detector's DetectionArray for one truth message: the objects
/// on the belt wholly inside the view, with 1 mm of position noise. Each
/// detection's id carries the sim id in its first 8 bytes (the tracker
/// keeps the first detection's id as the object's), the frame in the rest.
pub fn truth_detections(
    t: &m::Truth,
    view_x_m: (f64, f64),
    rng: &mut rand_chacha::ChaCha8Rng,
) -> m::DetectionArray {
    use rand_distr::{Distribution, Normal};
    let noise = Normal::new(0.0, 0.001).unwrap_or_else(|_| Normal::new(0.0, 0.0).unwrap());
    let mut out = m::DetectionArray {
        header: t.header.clone(),
        frame_seq: t.frame_seq,
        ..Default::default()
    };
    for o in &t.objects {
        let r = o.length_m.hypot(o.width_m) / 2.0;
        if o.state != m::TruthObject::ON_BELT as u8
            || o.position.x - r < view_x_m.0
            || o.position.x + r > view_x_m.1
        {
            continue;
        }
        let mut d = m::Detection::default();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&o.sim_id.to_le_bytes());
        id[8..].copy_from_slice(&t.frame_seq.to_le_bytes());
        d.object_id.uuid = id.to_vec();
        d.vision_id = format!("truth_{}_{}", o.sim_id, t.frame_seq);
        d.position.x = o.position.x + noise.sample(rng);
        d.position.y = o.position.y + noise.sample(rng);
        d.size_x_m = o.length_m;
        d.size_y_m = o.width_m;
        d.yaw_rad = o.yaw_rad;
        d.lane = o.lane as u8;
        d.class_id = o.class_id.clone();
        d.confidence = 0.9;
        out.detections.push(d);
    }
    out
}
