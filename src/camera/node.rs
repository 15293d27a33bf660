//! The `camera` node: the r2r shell around a source. Configure opens the
//! source (a file or device is opened and its first frame checked; sim
//! needs nothing yet); activate starts the frames; a fault while active (a
//! device unplugged, a stream gone silent or bad) takes the node through
//! ErrorProcessing, and the kit reconnects it with backoff.

use super::core::{DropCounter, SourceSpec};
use super::params::CameraParams;
use super::source::{check_frame, Capture, SourceError};
use crate::kit::frames::{self, Frame, FramePublisher, Received};
use crate::kit::health::Counters;
use crate::kit::lifecycle::{ActiveGate, Faults, Steps};
use crate::kit::node::{self, NodeContext};
use crate::kit::params::Params;
use crate::kit::spin::SharedNode;
use crate::kit::time::{from_duration, to_duration, wall_now};
use crate::kit::worker::Worker;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counter names in the node's /diagnostics status.
pub const FRAMES: &str = "frames";
pub const FRAMES_DROPPED: &str = "frames_dropped";
pub const FRAMES_OUT_OF_ORDER: &str = "frames_out_of_order";

pub struct CameraNode {
    node: SharedNode,
    namespace: String,
    gate: ActiveGate,
    params: Params<CameraParams>,
    faults: Faults,
    counters: Counters,
    publisher: Option<Arc<Mutex<FramePublisher>>>,
    capture: Option<Arc<Mutex<Capture>>>,
    worker: Option<Worker>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl CameraNode {
    pub fn new(c: &NodeContext<CameraParams>) -> Self {
        CameraNode {
            node: c.node.clone(),
            namespace: c.namespace(),
            gate: c.gate.clone(),
            params: c.params.clone(),
            faults: c.faults.clone(),
            counters: c.counters.clone(),
            publisher: None,
            capture: None,
            worker: None,
            task: None,
        }
    }

    fn stop(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    fn release_now(&mut self) {
        self.stop();
        self.capture = None;
        self.publisher = None;
    }
}

/// Reads a captured source on its own thread and publishes each frame.
struct CapturePump {
    cap: Arc<Mutex<Capture>>,
    publisher: Arc<Mutex<FramePublisher>>,
    faults: Faults,
    counters: Counters,
    frame_id: String,
    exposure_s: f64,
    drops: Option<DropCounter>,
    started: Option<(Instant, Duration)>,
    k: u64,
    faulted: bool,
    ended: bool,
}

impl CapturePump {
    fn step(&mut self) {
        if self.faulted || self.ended {
            std::thread::sleep(Duration::from_millis(20));
            return;
        }
        let mut cap = self.cap.lock().unwrap_or_else(|e| e.into_inner());
        let is_file = cap.name().starts_with("file:");
        let fps = cap.fps;
        let (t0, wall0) = *self
            .started
            .get_or_insert_with(|| (Instant::now(), to_duration(&wall_now())));
        if is_file {
            // A file plays at its rate: wait until this frame is due.
            let due = t0 + Duration::from_secs_f64(super::core::due_s(self.k, fps));
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(Duration::from_millis(20)));
                if Instant::now() < due {
                    return;
                }
            }
        }
        match cap.read() {
            Ok(image) => {
                let stamp = if is_file {
                    from_duration(wall0 + Duration::from_secs_f64(super::core::due_s(self.k, fps)))
                } else {
                    // The middle of the exposure that just ended.
                    let now = to_duration(&wall_now());
                    from_duration(
                        now.saturating_sub(Duration::from_secs_f64(self.exposure_s / 2.0)),
                    )
                };
                self.k += 1;
                let drops = self.drops.get_or_insert_with(|| DropCounter::new(fps));
                let missing = drops.frame(to_duration(&stamp).as_secs_f64());
                self.counters.add(FRAMES, 1);
                self.counters.add(crate::kit::health::MESSAGES, 1);
                self.counters.add(FRAMES_DROPPED, missing);
                let frame = Arc::new(Frame {
                    seq: self.k,
                    stamp,
                    frame_id: self.frame_id.clone(),
                    image,
                });
                let p = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = p.publish(frame) {
                    tracing::warn!("camera: publishing: {e}");
                }
            }
            Err(SourceError::Ended { camera }) => {
                tracing::info!(source = %camera, frames = self.k, "camera: end of the video");
                self.ended = true;
            }
            Err(e) => {
                self.faulted = true;
                self.faults.raise(e.to_string());
            }
        }
    }
}

/// Relays the simulator's frames (the same `Arc`s when it shares the
/// process), checking each and counting gaps.
async fn relay_sim(
    mut stream: frames::FrameStream,
    publisher: Arc<Mutex<FramePublisher>>,
    params: Params<CameraParams>,
    faults: Faults,
    counters: Counters,
) {
    let p = params.get();
    let mut drops = DropCounter::new(p.fps);
    let timeout = Duration::from_secs_f64(p.frame_timeout_s);
    let name = format!("sim ({})", p.sim_topic);
    loop {
        let got = tokio::time::timeout(timeout, stream.next()).await;
        let frame = match got {
            Ok(Some(Received::Frame(f))) => f,
            Ok(Some(Received::Lagged(n))) => {
                counters.add(FRAMES_DROPPED, n);
                continue;
            }
            Ok(Some(Received::Bad(e))) => {
                faults.raise(format!("{name}: {e}"));
                return;
            }
            Ok(None) => {
                faults.raise(format!("{name}: the frame stream ended"));
                return;
            }
            Err(_) => {
                faults.raise(format!(
                    "{name}: no frame for {:.1} s (frame_timeout_s)",
                    p.frame_timeout_s
                ));
                return;
            }
        };
        if let Err(e) = check_frame(&name, &frame.image, &p.wanted()) {
            faults.raise(e.to_string());
            return;
        }
        counters.add(FRAMES, 1);
        counters.add(crate::kit::health::MESSAGES, 1);
        counters.add(
            FRAMES_DROPPED,
            drops.frame(to_duration(&frame.stamp).as_secs_f64()),
        );
        let r = publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .publish(frame);
        if let Err(e) = r {
            tracing::warn!("camera: publishing: {e}");
        }
    }
}

impl Steps for CameraNode {
    fn configure(&mut self) -> anyhow::Result<()> {
        let p = self.params.get();
        let spec = p.source_spec().map_err(anyhow::Error::msg)?;
        if spec != SourceSpec::Sim {
            let cap = Capture::open(&spec, p.wanted(), p.loop_file)?;
            tracing::info!(source = %spec, fps = cap.fps, "camera source open");
            self.capture = Some(Arc::new(Mutex::new(cap)));
        }
        let publisher = {
            let mut n = self.node.lock();
            FramePublisher::new(&mut n, &self.namespace, &p.image_topic, self.gate.clone())?
        };
        self.publisher = Some(Arc::new(Mutex::new(publisher)));
        Ok(())
    }
    fn activate(&mut self) -> anyhow::Result<()> {
        let p = self.params.get();
        let publisher = self
            .publisher
            .clone()
            .ok_or_else(|| anyhow::anyhow!("not configured"))?;
        match &self.capture {
            Some(cap) => {
                let mut pump = CapturePump {
                    cap: cap.clone(),
                    publisher,
                    faults: self.faults.clone(),
                    counters: self.counters.clone(),
                    frame_id: p.frame_id.clone(),
                    exposure_s: p.exposure_s,
                    drops: None,
                    started: None,
                    k: 0,
                    faulted: false,
                    ended: false,
                };
                self.worker = Some(Worker::spawn("camera", move || pump.step())?);
            }
            None => {
                let stream = {
                    let mut n = self.node.lock();
                    frames::subscribe(&mut n, &self.namespace, &p.sim_topic)?
                };
                tracing::info!(path = ?stream.path, topic = %p.sim_topic, "camera: sim frames");
                self.task = Some(tokio::spawn(relay_sim(
                    stream,
                    publisher,
                    self.params.clone(),
                    self.faults.clone(),
                    self.counters.clone(),
                )));
            }
        }
        Ok(())
    }
    fn deactivate(&mut self) -> anyhow::Result<()> {
        self.stop();
        Ok(())
    }
    fn release(&mut self) {
        self.release_now();
    }
}

/// The camera node's `main`.
pub fn main() {
    node::main::<CameraParams, _, _>("camera", "/cell", |c| Ok(CameraNode::new(c)))
}
