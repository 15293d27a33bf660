//! The `sim` node: the r2r shell around [`SimCore`]. On configure it powers
//! on one GRBL emulator per CNC on a PTY (symlinked where the params say)
//! and starts the world's clock; from then on a loop thread advances the
//! world, feeds it the boards' nozzle positions, carries out faults, and
//! renders each frame. While active it publishes `sim/truth` (every frame)
//! and `sim/image_raw` (delivered frames). The world keeps running while
//! inactive, as a real belt would; cleanup powers everything off.

use super::cell::{FaultAction, SimCore};
use super::grbl::machine::Config;
use super::grbl::pty::{PtyEmulator, SimClock};
use super::params::{SimConfig, SimParams};
use super::render::Renderer;
use super::truth::{FrameTruth, TruthLog};
use super::vacuum::NozzleSample;
use crate::kit::frames::{Frame, FramePublisher, SharedFrame};
use crate::kit::lifecycle::{ActiveGate, CallbackResult, Callbacks, LifecyclePublisher};
use crate::kit::node;
use crate::kit::params::Params;
use crate::kit::spin::SharedNode;
use crate::kit::worker::Worker;
use crate::msgs::msg as m;
use futures::future::BoxFuture;
use nalgebra::Vector3;
use opencv::core::Mat;
use r2r::builtin_interfaces::msg::Time;
use r2r::QosProfile;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const TRUTH_TOPIC: &str = "sim/truth";
pub const IMAGE_TOPIC: &str = "sim/image_raw";
/// std_msgs/String `"<kind> [key=value ...]"`: a fault injected now (the
/// kinds and keys of the `faults` parameter; chaos runs use it).
pub const INJECT_TOPIC: &str = "sim/inject_fault";

/// The longest the loop sleeps, so nozzle samples stay fine-grained.
const STEP: Duration = Duration::from_millis(4);

/// Simulated seconds after the epoch as a ROS time.
pub fn stamp(epoch_s: f64, t_s: f64) -> Time {
    let total = epoch_s + t_s;
    let sec = total.floor();
    Time {
        sec: sec as i32,
        nanosec: (((total - sec) * 1e9).round() as u32).min(999_999_999),
    }
}

pub fn truth_msg(f: &FrameTruth, epoch_s: f64) -> m::Truth {
    let mut msg = m::Truth::default();
    msg.header.stamp = stamp(epoch_s, f.t_s);
    msg.header.frame_id = "belt".into();
    msg.frame_seq = f.frame;
    msg.belt_speed_mps = f.belt_speed_mps;
    msg.belt_travel_m = f.belt_travel_m;
    msg.delivered = f.delivered;
    msg.objects = f
        .objects
        .iter()
        .map(|o| m::TruthObject {
            sim_id: o.id,
            class_id: o.class.clone(),
            lane: o.lane,
            position: r2r::geometry_msgs::msg::Point {
                x: o.position_m[0],
                y: o.position_m[1],
                z: o.position_m[2],
            },
            yaw_rad: o.yaw_rad,
            length_m: o.length_m,
            width_m: o.width_m,
            velocity_x_mps: o.velocity_x_mps,
            state: if o.state == "held" {
                m::TruthObject::HELD as u8
            } else {
                m::TruthObject::ON_BELT as u8
            },
            cnc_id: o.cnc.clone().unwrap_or_default(),
            arrived: stamp(epoch_s, o.arrived_s),
        })
        .collect();
    msg.events = f
        .events
        .iter()
        .map(|e| m::TruthEvent {
            stamp: stamp(epoch_s, e.t_s),
            sim_id: e.object_id,
            kind: e.kind.code(),
            cnc_id: e.cnc.clone().unwrap_or_default(),
            detail: e.detail.clone(),
        })
        .collect();
    msg
}

/// One CNC's board: running, or unplugged until a time (its gantry
/// standing where it was, machine mm: the board powers on there).
enum Board {
    On(PtyEmulator),
    Unplugged { until_s: f64, at_mm: [f64; 3] },
}

fn power_on(
    cfg: &SimConfig,
    i: usize,
    clock: SimClock,
    gantry_mm: [f64; 3],
) -> std::io::Result<PtyEmulator> {
    let c = &cfg.cncs[i];
    let link = (!c.pty_link.is_empty()).then(|| Path::new(&c.pty_link));
    let emu = PtyEmulator::start_at(
        Config::default(),
        cfg.grbl_settings(i),
        clock,
        link,
        gantry_mm,
    )?;
    // Reported on stdout so a launcher or a person can find it.
    println!(
        "sim: cnc_{} GRBL emulator on {}{}",
        c.id,
        emu.path(),
        if c.pty_link.is_empty() {
            String::new()
        } else {
            format!(" (link {})", c.pty_link)
        }
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(emu)
}

/// The loop's state: everything from configure to cleanup.
struct Cell {
    core: SimCore,
    renderer: Renderer,
    boards: Vec<Board>,
    clock: SimClock,
    epoch_s: f64,
    next_frame: u64,
    /// The frame the renderer last prepared ahead.
    prepared: Option<u64>,
    /// Frames rendered and published (or held back as late).
    rendered: u64,
    late: VecDeque<(f64, SharedFrame)>,
    truth_pub: LifecyclePublisher<m::Truth>,
    image_pub: FramePublisher,
    params: Params<SimParams>,
    log: Option<TruthLog>,
    /// Faults injected on `sim/inject_fault`, applied at the next step.
    injected: std::sync::mpsc::Receiver<String>,
}

impl Drop for Cell {
    fn drop(&mut self) {
        tracing::info!(
            frames = self.rendered,
            drawn_before_exposure = self.renderer.used_ahead(),
            "sim: frames rendered"
        );
    }
}

impl Cell {
    fn apply(&mut self, actions: Vec<FaultAction>) {
        for a in actions {
            match a {
                FaultAction::Alarm { cnc, code } => {
                    if let Board::On(e) = &self.boards[cnc] {
                        tracing::warn!(cnc = %self.core.cfg.cncs[cnc].id, code, "fault: ALARM");
                        e.raise_alarm(code);
                    }
                }
                FaultAction::Garbage { cnc, bytes } => {
                    if let Board::On(e) = &self.boards[cnc] {
                        tracing::warn!(cnc = %self.core.cfg.cncs[cnc].id, n = bytes.len(), "fault: line noise");
                        e.write_garbage(bytes);
                    }
                }
                FaultAction::Disconnect { cnc, until_s } => {
                    tracing::warn!(cnc = %self.core.cfg.cncs[cnc].id, until_s, "fault: serial line unplugged");
                    // Dropping the emulator closes its PTY and removes the link.
                    let at_mm = match &self.boards[cnc] {
                        Board::On(e) => e.snapshot().position_mm,
                        Board::Unplugged { at_mm, .. } => *at_mm,
                    };
                    self.boards[cnc] = Board::Unplugged { until_s, at_mm };
                }
            }
        }
    }

    fn step(&mut self) {
        let now_s = self.clock.now().as_secs_f64();
        while let Ok(entry) = self.injected.try_recv() {
            match self.core.inject(&entry, now_s) {
                Ok(()) => tracing::warn!("fault injected at {now_s:.3} s: {entry}"),
                Err(e) => tracing::error!("{INJECT_TOPIC}: refused {e}"),
            }
        }
        let p = self.params.get();
        self.renderer.set_effects(
            p.noise_stddev,
            p.blur_sigma_px,
            p.lighting_drift_fraction,
            p.lighting_drift_period_s,
        );
        // Frames first: the world must not pass an exposure unrendered.
        let mut behind = 0;
        while self.core.frame_time_s(self.next_frame) <= now_s {
            let k = self.next_frame;
            self.next_frame += 1;
            let t = self.core.frame_time_s(k);
            let actions = self.core.advance_to(t);
            self.apply(actions);
            let (truth, drawn) = self.core.frame(k);
            let late_frame = self.core.frame_time_s(self.next_frame) <= now_s;
            if truth.delivered && p.publish_images && !late_frame {
                // A fresh image per frame: subscribers in this process share it.
                let mut image = Mat::default();
                match self.renderer.render(k, t, &drawn, &mut image) {
                    Ok(()) => {
                        self.rendered += 1;
                        let frame = Arc::new(Frame {
                            seq: k,
                            stamp: stamp(self.epoch_s, t),
                            frame_id: "camera".into(),
                            image,
                        });
                        let delay = self.core.frame_delay_s(k);
                        if delay > 0.0 {
                            self.late.push_back((t + delay, frame));
                        } else if let Err(e) = self.image_pub.publish(frame) {
                            tracing::error!("frame {k}: {e}");
                        }
                    }
                    Err(e) => tracing::error!("rendering frame {k}: {e}"),
                }
            } else if late_frame {
                behind += 1;
            }
            if let Some(log) = &mut self.log {
                if let Err(e) = log.write(&truth) {
                    tracing::error!("{e}; truth log stopped");
                    self.log = None;
                }
            }
            let _ = self.truth_pub.publish(&truth_msg(&truth, self.epoch_s));
        }
        if behind > 0 {
            tracing::warn!(frames = behind, "rendering fell behind; skipped frames");
        }
        let cfg = self.core.cfg.clone();
        for i in 0..self.boards.len() {
            if let Board::On(e) = &self.boards[i] {
                let s = e.snapshot();
                let tip = cfg.cncs[i].frame.to_belt_m(Vector3::from(s.position_mm));
                self.core.nozzle(
                    i,
                    NozzleSample {
                        t_s: s.at.as_secs_f64(),
                        tip_m: [tip.x, tip.y, tip.z],
                        vacuum_on: s.vacuum_on,
                    },
                );
            }
        }
        let actions = self.core.advance_to(now_s);
        self.apply(actions);
        for (i, b) in self.boards.iter().enumerate() {
            if let Board::On(e) = b {
                e.set_vacuum_sensor(self.core.holding(i));
            }
        }
        for i in 0..self.boards.len() {
            if let Board::Unplugged { until_s, at_mm } = self.boards[i] {
                if until_s <= now_s {
                    match power_on(&cfg, i, self.clock, at_mm) {
                        Ok(e) => self.boards[i] = Board::On(e),
                        Err(e) => tracing::error!(cnc = %cfg.cncs[i].id, "replugging: {e}"),
                    }
                }
            }
        }
        while self.late.front().is_some_and(|(at, _)| *at <= now_s) {
            if let Some((_, frame)) = self.late.pop_front() {
                let _ = self.image_pub.publish(frame);
            }
        }
        if let Some(log) = &mut self.log {
            let _ = log.flush();
        }
        let next = self.core.frame_time_s(self.next_frame);
        // The next frame is drawn while waiting for its exposure, with the
        // objects where the belt will have carried them, so that nothing
        // is drawn after it unless the world changes in between (then only
        // the objects are, on the empty belt prepared here as well); half
        // a frame ahead, once this frame's pipeline has had the cores.
        let half_frame_s = 0.5 / self.core.cfg.camera.fps;
        if p.publish_images
            && self.prepared != Some(self.next_frame)
            && now_s >= next - half_frame_s
        {
            let expected = self.core.drawn_ahead(self.next_frame);
            if let Err(e) = self
                .renderer
                .prepare(self.next_frame, next)
                .and_then(|()| self.renderer.render_ahead(self.next_frame, next, &expected))
            {
                tracing::error!("preparing frame {}: {e}", self.next_frame);
            }
            self.prepared = Some(self.next_frame);
        }
        let wake = self.clock.instant_at(Duration::from_secs_f64(next));
        let now = std::time::Instant::now();
        std::thread::sleep(wake.saturating_duration_since(now).min(STEP));
    }
}

pub struct SimNode {
    node: SharedNode,
    namespace: String,
    gate: ActiveGate,
    params: Params<SimParams>,
    worker: Option<Worker>,
    injector: Option<tokio::task::JoinHandle<()>>,
}

impl SimNode {
    fn configure(&mut self) -> anyhow::Result<()> {
        let p = self.params.get();
        let cfg = p.config().map_err(anyhow::Error::msg)?;
        let (truth_pub, image_pub) = {
            let mut n = self.node.lock();
            let truth = n.create_publisher::<m::Truth>(
                TRUTH_TOPIC,
                QosProfile::default().reliable().keep_last(100),
            )?;
            let image =
                FramePublisher::new(&mut n, &self.namespace, IMAGE_TOPIC, self.gate.clone())?;
            (LifecyclePublisher::new(truth, self.gate.clone()), image)
        };
        let log = if p.truth_log_path.is_empty() {
            None
        } else {
            Some(TruthLog::create(Path::new(&p.truth_log_path))?)
        };
        let (inject_tx, injected) = std::sync::mpsc::channel();
        let mut requests = self.node.lock().subscribe::<r2r::std_msgs::msg::String>(
            INJECT_TOPIC,
            QosProfile::default().reliable().keep_last(100),
        )?;
        self.injector = Some(tokio::spawn(async move {
            while let Some(m) = futures::StreamExt::next(&mut requests).await {
                if inject_tx.send(m.data).is_err() {
                    return;
                }
            }
        }));
        let renderer = Renderer::for_config(&cfg)?;
        let clock = SimClock::new(p.time_scale);
        let epoch_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut boards = Vec::new();
        for i in 0..cfg.cncs.len() {
            // The gantries stand at their homes (machine zero) at start.
            boards.push(Board::On(power_on(&cfg, i, clock, [0.0; 3])?));
        }
        let mut cell = Cell {
            core: SimCore::new(cfg),
            renderer,
            boards,
            clock,
            epoch_s,
            next_frame: 0,
            prepared: None,
            rendered: 0,
            late: VecDeque::new(),
            truth_pub,
            image_pub,
            params: self.params.clone(),
            log,
            injected,
        };
        self.worker = Some(Worker::spawn("sim", move || cell.step())?);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
        if let Some(t) = self.injector.take() {
            t.abort();
        }
    }
}

impl Callbacks for SimNode {
    fn on_configure(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            let r = self.configure();
            if r.is_err() {
                self.stop();
            }
            CallbackResult::from_result(r)
        })
    }
    fn on_activate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move { CallbackResult::Success })
    }
    fn on_deactivate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move { CallbackResult::Success })
    }
    fn on_cleanup(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            self.stop();
            CallbackResult::Success
        })
    }
    fn on_shutdown(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            self.stop();
            CallbackResult::Success
        })
    }
    fn on_error(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            self.stop();
            CallbackResult::Success
        })
    }
}

impl SimNode {
    pub fn new(c: &node::NodeContext<SimParams>) -> Self {
        SimNode {
            node: c.node.clone(),
            namespace: c.namespace(),
            gate: c.gate.clone(),
            params: c.params.clone(),
            worker: None,
            injector: None,
        }
    }
}

/// The sim node's `main`.
pub fn main() {
    node::main::<SimParams, _, _>("sim", "/cell", |c| Ok(SimNode::new(c)))
}
