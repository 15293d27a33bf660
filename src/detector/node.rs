//! The `detector` node: the r2r shell around [`Detector`]. Frames arrive
//! from the camera (in process as shared `Arc`s when the camera lives in
//! this process, else from DDS), wait in a short queue (the oldest are
//! dropped and counted when the detector falls behind), and are detected
//! on a thread of their own. Each frame gives one DetectionArray stamped
//! with the frame's exposure. A frame the detector cannot take (a wrong
//! pixel format, an ROI that does not fit) is a fault: the node goes to
//! its error state and says why.

use super::core::{object_uuid, vision_ids, Detected, Detector};
use super::params::DetectorParams;
use crate::kit::frames::{self, Frame, FramePublisher, Received, SharedFrame};
use crate::kit::health::Counters;
use crate::kit::lifecycle::{ActiveGate, Faults, LifecyclePublisher, Steps};
use crate::kit::node::{self, NodeContext};
use crate::kit::params::Params;
use crate::kit::spin::SharedNode;
use crate::kit::time::to_duration;
use crate::kit::worker::Worker;
use crate::msgs::msg as m;
use opencv::core::{Point, Rect, Scalar};
use opencv::imgproc;
use opencv::prelude::*;
use r2r::QosProfile;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub const DETECTIONS_TOPIC: &str = "detections";
pub const DEBUG_TOPIC: &str = "detector/debug_image";
pub const FRAMES: &str = "frames";
pub const FRAMES_DROPPED: &str = "frames_dropped";
pub const DETECTIONS: &str = "detections";

/// Frames waiting for the detector thread.
#[derive(Default)]
struct Queue {
    frames: Mutex<VecDeque<SharedFrame>>,
    ready: Condvar,
}

/// The DetectionArray for one frame's detections.
pub fn detections_msg(
    frame: &Frame,
    found: &[Detected],
    class_names: &[String],
) -> m::DetectionArray {
    let mut msg = m::DetectionArray::default();
    msg.header.stamp = frame.stamp.clone();
    msg.header.frame_id = "belt".into();
    msg.frame_seq = frame.seq;
    let stamp_ms = to_duration(&frame.stamp).as_millis() as u64;
    let ids = vision_ids(stamp_ms, found);
    msg.detections = found
        .iter()
        .zip(ids)
        .map(|(d, vision_id)| {
            let mut out = m::Detection::default();
            out.object_id.uuid = object_uuid(&frame.frame_id, &vision_id).as_bytes().to_vec();
            out.vision_id = vision_id;
            out.position.x = d.x_m;
            out.position.y = d.y_m;
            out.size_x_m = d.size_x_m;
            out.size_y_m = d.size_y_m;
            out.yaw_rad = d.yaw_rad;
            out.lane = d.lane as u8;
            out.class_id = class_names.get(d.class).cloned().unwrap_or_default();
            out.confidence = d.confidence as f32;
            out.bbox_px.x_offset = d.bbox_px[0].max(0) as u32;
            out.bbox_px.y_offset = d.bbox_px[1].max(0) as u32;
            out.bbox_px.width = d.bbox_px[2].max(0) as u32;
            out.bbox_px.height = d.bbox_px[3].max(0) as u32;
            out
        })
        .collect();
    msg
}

/// The frame with its ROI and detections drawn (a copy: debug only).
fn debug_frame(frame: &Frame, found: &[Detected], roi: Option<Rect>) -> opencv::Result<Frame> {
    let mut img = frame.image.try_clone()?;
    if let Some(r) = roi {
        imgproc::rectangle_def(&mut img, r, Scalar::new(255.0, 255.0, 0.0, 0.0))?;
    }
    for d in found {
        let [x, y, w, h] = d.bbox_px;
        imgproc::rectangle_def(
            &mut img,
            Rect::new(x, y, w, h),
            Scalar::new(0.0, 255.0, 255.0, 0.0),
        )?;
        imgproc::put_text_def(
            &mut img,
            &format!("{} {:.2}", d.lane, d.confidence),
            Point::new(x, (y - 3).max(10)),
            imgproc::FONT_HERSHEY_SIMPLEX,
            0.4,
            Scalar::new(0.0, 255.0, 255.0, 0.0),
        )?;
    }
    Ok(Frame {
        seq: frame.seq,
        stamp: frame.stamp.clone(),
        frame_id: frame.frame_id.clone(),
        image: img,
    })
}

struct Worked {
    detector: Detector,
    built_from: DetectorParams,
    queue: Arc<Queue>,
    /// Parameter updates: checked per frame without cloning the params.
    updates: tokio::sync::watch::Receiver<DetectorParams>,
    out: LifecyclePublisher<m::DetectionArray>,
    debug: FramePublisher,
    faults: Faults,
    counters: Counters,
    faulted: bool,
}

impl Worked {
    fn step(&mut self) {
        let frame = {
            let mut q = self.queue.frames.lock().unwrap_or_else(|e| e.into_inner());
            if q.is_empty() {
                q = self
                    .queue
                    .ready
                    .wait_timeout(q, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            q.pop_front()
        };
        let Some(frame) = frame else { return };
        if self.faulted {
            return;
        }
        if self.updates.has_changed().unwrap_or(false) {
            let p = self.updates.borrow_and_update().clone();
            if p != self.built_from {
                // The colour table is rebuilt only if colours changed.
                let updated = p
                    .config()
                    .and_then(|c| self.detector.reconfigure(c).map_err(|e| e.to_string()));
                match updated {
                    Ok(()) => self.built_from = p,
                    Err(e) => tracing::error!("detector: keeping the old settings: {e}"),
                }
            }
        }
        let t0 = std::time::Instant::now();
        let detected = self.detector.detect(&frame.image);
        self.counters.add(crate::kit::health::MESSAGES, 1);
        self.counters.set(
            crate::kit::health::LATENCY_US,
            t0.elapsed().as_micros() as u64,
        );
        if detected.is_err() {
            self.counters.add(crate::kit::health::ERRORS, 1);
        }
        match detected {
            Ok(found) => {
                self.counters.add(FRAMES, 1);
                self.counters.add(DETECTIONS, found.len() as u64);
                let msg = detections_msg(&frame, &found, &self.built_from.class_names);
                if let Err(e) = self.out.publish(&msg) {
                    tracing::warn!("detector: publishing: {e}");
                }
                if self.built_from.debug_image {
                    match debug_frame(&frame, &found, self.detector.config().roi_px) {
                        Ok(f) => {
                            let _ = self.debug.publish(Arc::new(f));
                        }
                        Err(e) => tracing::warn!("detector: debug image: {e}"),
                    }
                }
            }
            Err(e) => {
                self.faulted = true;
                self.faults
                    .raise(format!("frame {} from the camera: {e}", frame.seq));
            }
        }
    }
}

pub struct DetectorNode {
    node: SharedNode,
    namespace: String,
    gate: ActiveGate,
    params: Params<DetectorParams>,
    faults: Faults,
    counters: Counters,
    prepared: Option<(
        Detector,
        DetectorParams,
        LifecyclePublisher<m::DetectionArray>,
        FramePublisher,
    )>,
    worker: Option<Worker<Worked>>,
    task: Option<tokio::task::JoinHandle<()>>,
    queue: Arc<Queue>,
}

impl DetectorNode {
    pub fn new(c: &NodeContext<DetectorParams>) -> Self {
        DetectorNode {
            node: c.node.clone(),
            namespace: c.namespace(),
            gate: c.gate.clone(),
            params: c.params.clone(),
            faults: c.faults.clone(),
            counters: c.counters.clone(),
            prepared: None,
            worker: None,
            task: None,
            queue: Arc::new(Queue::default()),
        }
    }

    /// Stops the frame task and the detector thread; what the thread
    /// worked with, if it ran and did not panic.
    fn stop(&mut self) -> Option<Worked> {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.worker.take().and_then(Worker::finish)
    }
}

impl Steps for DetectorNode {
    fn configure(&mut self) -> anyhow::Result<()> {
        let p = self.params.get();
        let detector = Detector::new(p.config().map_err(anyhow::Error::msg)?)?;
        let mut n = self.node.lock();
        let out = LifecyclePublisher::new(
            n.create_publisher::<m::DetectionArray>(
                DETECTIONS_TOPIC,
                QosProfile::default().reliable().keep_last(10),
            )?,
            self.gate.clone(),
        );
        let debug = FramePublisher::new(&mut n, &self.namespace, DEBUG_TOPIC, self.gate.clone())?;
        self.prepared = Some((detector, p, out, debug));
        Ok(())
    }
    fn activate(&mut self) -> anyhow::Result<()> {
        let (detector, built_from, out, debug) = self
            .prepared
            .take()
            .ok_or_else(|| anyhow::anyhow!("not configured"))?;
        let p = self.params.get();
        let mut stream = {
            let mut n = self.node.lock();
            frames::subscribe(&mut n, &self.namespace, &p.image_topic)?
        };
        tracing::info!(path = ?stream.path, topic = %p.image_topic, "detector: frames");
        self.queue = Arc::new(Queue::default());
        let worked = Worked {
            detector,
            built_from,
            queue: self.queue.clone(),
            updates: {
                // Checked once at the first frame: an update since configure applies.
                let mut u = self.params.subscribe();
                u.mark_changed();
                u
            },
            out,
            debug,
            faults: self.faults.clone(),
            counters: self.counters.clone(),
            faulted: false,
        };
        self.worker = Some(Worker::spawn_with("detector", worked, Worked::step)?);
        let (queue, params, faults, counters) = (
            self.queue.clone(),
            self.params.clone(),
            self.faults.clone(),
            self.counters.clone(),
        );
        self.task = Some(tokio::spawn(async move {
            while let Some(r) = stream.next().await {
                match r {
                    Received::Frame(f) => {
                        let limit = params.get().queue_frames.max(1) as usize;
                        let mut q = queue.frames.lock().unwrap_or_else(|e| e.into_inner());
                        q.push_back(f);
                        while q.len() > limit {
                            q.pop_front();
                            counters.add(FRAMES_DROPPED, 1);
                        }
                        queue.ready.notify_one();
                    }
                    Received::Lagged(n) => counters.add(FRAMES_DROPPED, n),
                    Received::Bad(e) => {
                        faults.raise(format!("a frame from the camera: {e}"));
                        return;
                    }
                }
            }
        }));
        Ok(())
    }
    fn deactivate(&mut self) -> anyhow::Result<()> {
        match self.stop() {
            // The detector thread hands its detector back, with the
            // settings it was last built from (an update since applied):
            // no new colour table (0.2-0.4 s and a 52 MB peak each).
            Some(w) => {
                self.prepared = Some((w.detector, w.built_from, w.out, w.debug));
                Ok(())
            }
            // Its thread panicked: a new one.
            None => self.configure(),
        }
    }
    fn release(&mut self) {
        self.stop();
        self.prepared = None;
    }
}

/// The detector node's `main`.
pub fn main() {
    node::main::<DetectorParams, _, _>("detector", "/cell", |c| Ok(DetectorNode::new(c)))
}
