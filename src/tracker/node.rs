//! The `tracker` node: the r2r shell around [`Tracker`].
//!
//! - `detections` in; each DetectionArray is one step of the core at its
//!   exposure stamp, and gives one TrackArray on `tracks` with every live
//!   track predicted to that stamp. A frame older than the last one is
//!   dropped and counted; so is a detection with a bad id or position.
//! - `belt/encoder` (BeltSpeed, optional) takes precedence over the vision
//!   estimate while its readings are fresh.
//! - `belt/speed` (BeltSpeed) every `speed_period_s`.
//! - Registration: a newly confirmed track is registered with the state
//!   manager (RegisterObject; one request id across the retries, so a
//!   repeat is harmless). Every attempt is bounded; a round that fails is
//!   logged with the trace id, raised on `alerts`, and tried again while
//!   the track lives: after 0.25 s, doubling up to `register_requeue_s`, so
//!   a store that was briefly unable (a full disk) takes the object soon
//!   after it can, while the tracker that saw it is still there.
//! - A confirmed track expected in view but unseen for
//!   `trigger_watch_for_object_s` is reported lost: logged with its trace
//!   id, raised on `alerts`, and shown as LOST in `tracks`.
//! - `markers` (MarkerArray) every `markers_period_s`, coloured by the
//!   object states heard on `objects/events`, with the pick points heard
//!   on `assignments`.

use super::core::{Observation, SpeedSource, Track, TrackState, Tracker};
use super::markers::{markers, Scene, Window};
use super::params::TrackerParams;
use crate::kit::alerts::Alerts;
use crate::kit::breaker::BreakerConfig;
use crate::kit::call::Caller;
use crate::kit::health::Counters;
use crate::kit::lifecycle::{ActiveGate, LifecyclePublisher, Steps};
use crate::kit::node::{self, NodeContext};
use crate::kit::params::Params;
use crate::kit::retry::{Backoff, DeadLetters, RetryPolicy};
use crate::kit::spin::SharedNode;
use crate::kit::time::{from_duration, seconds};
use crate::kit::trace::{object_span, trace_id};
use crate::msgs::msg as m;
use crate::msgs::srv::RegisterObject;
use crate::state::node::STORE_UNAVAILABLE;
use futures::StreamExt;
use r2r::builtin_interfaces::msg::Time;
use r2r::visualization_msgs::msg::MarkerArray;
use r2r::QosProfile;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

pub const TRACKS_TOPIC: &str = "tracks";
pub const SPEED_TOPIC: &str = "belt/speed";
pub const MARKERS_TOPIC: &str = "markers";
pub const ALERTS_TOPIC: &str = crate::kit::alerts::TOPIC;
pub const EVENTS_TOPIC: &str = "objects/events";
pub const ASSIGNMENTS_TOPIC: &str = "assignments";
pub const FRAMES: &str = "frames";
pub const STALE_FRAMES: &str = "stale_frames";
pub const BAD_DETECTIONS: &str = "bad_detections";
pub const CONFIRMED: &str = "confirmed";
pub const REGISTERED: &str = "registered";
pub const REGISTER_FAILED: &str = "register_failed";
pub const LOST: &str = "lost";

fn stamp(t_s: f64) -> Time {
    from_duration(Duration::from_secs_f64(t_s.max(0.0)))
}

/// A detection as the core takes it, or why it cannot be.
pub fn observation(d: &m::Detection) -> Result<Observation, String> {
    let object_id: [u8; 16] = d.object_id.uuid.as_slice().try_into().map_err(|_| {
        format!(
            "detection {:?}: object_id has {} bytes, not 16",
            d.vision_id,
            d.object_id.uuid.len()
        )
    })?;
    let finite = [
        d.position.x,
        d.position.y,
        d.size_x_m,
        d.size_y_m,
        d.yaw_rad,
    ];
    if finite.iter().any(|v| !v.is_finite()) {
        return Err(format!(
            "detection {} ({:?}): a position, size or yaw is not a finite number",
            trace_id(&object_id),
            d.vision_id
        ));
    }
    Ok(Observation {
        x_m: d.position.x,
        y_m: d.position.y,
        class_id: d.class_id.clone(),
        confidence: d.confidence as f64,
        size_m: [d.size_x_m, d.size_y_m],
        yaw_rad: d.yaw_rad,
        object_id,
        vision_id: d.vision_id.clone(),
    })
}

/// One track as a message.
pub fn track_msg(t: &Track, lane: u32) -> m::Track {
    let mut out = m::Track::default();
    out.object_id.uuid = t.object_id.to_vec();
    out.vision_id = t.vision_id.clone();
    let p = t.position();
    let v = t.kalman.velocity();
    out.position.x = p.x;
    out.position.y = p.y;
    out.velocity.x = v.x;
    out.velocity.y = v.y;
    let c = t.kalman.position_cov();
    out.covariance_xy = vec![c[(0, 0)], c[(0, 1)], c[(1, 0)], c[(1, 1)]];
    out.lane = lane as u8;
    out.class_id = t.class_id.clone();
    out.confidence = t.confidence as f32;
    out.first_seen = stamp(t.first_seen_s);
    out.last_seen = stamp(t.last_seen_s);
    out.hits = t.hits;
    out.visible = t.visible;
    out.status = match t.state {
        TrackState::Tentative => m::Track::STATUS_TENTATIVE as u8,
        TrackState::Confirmed => m::Track::STATUS_CONFIRMED as u8,
        TrackState::Lost => m::Track::STATUS_LOST as u8,
    };
    out
}

/// Every live track, predicted to the tracker's latest stamp.
pub fn tracks_msg(tracker: &Tracker) -> m::TrackArray {
    let mut out = m::TrackArray::default();
    out.header.stamp = stamp(tracker.now_s().unwrap_or(0.0));
    out.header.frame_id = "belt".into();
    out.belt_speed_mps = tracker.belt_speed().speed_mps;
    out.tracks = tracker
        .tracks()
        .iter()
        .map(|t| track_msg(t, tracker.lane_of(t.position().y)))
        .collect();
    out
}

/// The belt speed in use, stamped with the latest observation.
pub fn speed_msg(tracker: &Tracker) -> m::BeltSpeed {
    let s = tracker.belt_speed();
    let mut out = m::BeltSpeed::default();
    out.header.stamp = stamp(tracker.now_s().unwrap_or(0.0));
    out.header.frame_id = "belt".into();
    out.speed_mps = s.speed_mps;
    out.stddev_mps = s.stddev_mps;
    out.source = match s.source {
        SpeedSource::Encoder => m::BeltSpeed::SOURCE_ENCODER as u8,
        SpeedSource::Vision | SpeedSource::Assumed => m::BeltSpeed::SOURCE_VISION as u8,
    };
    out.stopped = s.stopped;
    out
}

/// The RegisterObject request for a confirmed track, whose state is
/// predicted to `now_s`: the position sent is where it was at
/// `detected_at` (its first exposure), as the state manager takes it
/// (its recovery and expiry predict from there).
pub fn register_request(
    t: &Track,
    lane: u32,
    request_id: &str,
    now_s: f64,
) -> RegisterObject::Request {
    let back_s = (now_s - t.first_seen_s).max(0.0);
    let p = t.position() - t.kalman.velocity() * back_s;
    RegisterObject::Request {
        request_id: request_id.into(),
        object_id: r2r::unique_identifier_msgs::msg::UUID {
            uuid: t.object_id.to_vec(),
        },
        vision_id: t.vision_id.clone(),
        position: r2r::geometry_msgs::msg::Point {
            x: p.x,
            y: p.y,
            z: 0.0,
        },
        velocity_x_mps: t.kalman.velocity().x,
        lane: lane as u8,
        class_id: t.class_id.clone(),
        confidence: t.confidence as f32,
        detected_at: stamp(t.first_seen_s),
        actor: "tracker".into(),
    }
}

/// The tracker and what the markers need, shared by the shell's tasks.
struct Shared {
    tracker: Tracker,
    scene: Scene,
    registered: HashSet<[u8; 16]>,
    /// Registration rounds failed so far, per track not yet registered.
    failed_rounds: HashMap<[u8; 16], u32>,
}

/// The first wait before a failed registration round is tried again; it
/// doubles up to `register_requeue_s`.
const REQUEUE_FIRST: Duration = Duration::from_millis(250);

type SharedState = Arc<Mutex<Shared>>;

fn lock(s: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
struct Publishers {
    tracks: LifecyclePublisher<m::TrackArray>,
    speed: LifecyclePublisher<m::BeltSpeed>,
    markers: LifecyclePublisher<MarkerArray>,
    alerts: Alerts,
}

pub struct TrackerNode {
    node: SharedNode,
    gate: ActiveGate,
    params: Params<TrackerParams>,
    counters: Counters,
    prepared: Option<(SharedState, Publishers)>,
    tasks: Vec<JoinHandle<()>>,
}

impl TrackerNode {
    pub fn new(c: &NodeContext<TrackerParams>) -> Self {
        TrackerNode {
            node: c.node.clone(),
            gate: c.gate.clone(),
            params: c.params.clone(),
            counters: c.counters.clone(),
            prepared: None,
            tasks: Vec::new(),
        }
    }

    fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Steps for TrackerNode {
    fn configure(&mut self) -> anyhow::Result<()> {
        let p = self.params.get();
        let tracker = Tracker::new(p.config().map_err(anyhow::Error::msg)?);
        let scene = Scene {
            belt_width_m: p.belt_width_m,
            windows: (0..p.cnc_ids.len())
                .map(|i| Window {
                    cnc_id: p.cnc_ids[i].clone(),
                    x_min_m: p.cnc_x_min_m[i],
                    x_max_m: p.cnc_x_max_m[i],
                })
                .collect(),
            ..Scene::default()
        };
        let mut n = self.node.lock();
        let reliable = QosProfile::default().reliable().keep_last(10);
        let gate = &self.gate;
        let pubs = Publishers {
            tracks: LifecyclePublisher::new(
                n.create_publisher(TRACKS_TOPIC, reliable.clone())?,
                gate.clone(),
            ),
            speed: LifecyclePublisher::new(
                n.create_publisher(SPEED_TOPIC, reliable.clone())?,
                gate.clone(),
            ),
            markers: LifecyclePublisher::new(
                n.create_publisher(MARKERS_TOPIC, QosProfile::default().keep_last(1))?,
                gate.clone(),
            ),
            alerts: Alerts::new(&mut n, "tracker", gate.clone())?,
        };
        let shared = Arc::new(Mutex::new(Shared {
            tracker,
            scene,
            registered: HashSet::new(),
            failed_rounds: HashMap::new(),
        }));
        self.prepared = Some((shared, pubs));
        Ok(())
    }
    fn activate(&mut self) -> anyhow::Result<()> {
        let (shared, pubs) = self
            .prepared
            .clone()
            .ok_or_else(|| anyhow::anyhow!("not configured"))?;
        let p = self.params.get();
        let mut n = self.node.lock();
        let reliable = QosProfile::default().reliable().keep_last(100);
        let mut detections =
            n.subscribe::<m::DetectionArray>(&p.detections_topic, reliable.clone())?;
        let mut events = n.subscribe::<m::ObjectEvent>(EVENTS_TOPIC, crate::kit::qos::events())?;
        let mut assignments = n.subscribe::<m::Assignment>(ASSIGNMENTS_TOPIC, reliable.clone())?;
        let encoder = if p.encoder_topic.is_empty() {
            None
        } else {
            Some(n.subscribe::<m::BeltSpeed>(&p.encoder_topic, reliable)?)
        };
        // Registration: confirmed ids in, a task calling the state manager.
        let (register_tx, mut register_rx) = tokio::sync::mpsc::unbounded_channel::<[u8; 16]>();
        let caller = if p.register_service.is_empty() {
            None
        } else {
            Some(Arc::new(Caller::<RegisterObject::Service>::new(
                &mut n,
                &p.register_service,
                Duration::from_secs_f64(p.register_timeout_s),
                RetryPolicy {
                    max_attempts: p.register_attempts as u32,
                    backoff: Backoff::default(),
                },
                BreakerConfig {
                    failure_threshold: 5,
                    open_for: Duration::from_secs(5),
                },
                DeadLetters::in_memory(),
                0,
            )?))
        };
        drop(n);

        // Frames.
        {
            let (shared, pubs, counters) = (shared.clone(), pubs.clone(), self.counters.clone());
            let register_tx = register_tx.clone();
            self.tasks.push(tokio::spawn(async move {
                while let Some(msg) = detections.next().await {
                    let t_s = seconds(&msg.header.stamp);
                    let mut observations = Vec::with_capacity(msg.detections.len());
                    for d in &msg.detections {
                        match observation(d) {
                            Ok(o) => observations.push(o),
                            Err(e) => {
                                counters.add(BAD_DETECTIONS, 1);
                                counters.add(crate::kit::health::ERRORS, 1);
                                tracing::warn!("tracker: frame {}: {e}", msg.frame_seq);
                            }
                        }
                    }
                    let mut s = lock(&shared);
                    if s.tracker.now_s().is_some_and(|now| t_s < now) {
                        counters.add(STALE_FRAMES, 1);
                        tracing::warn!(
                            "tracker: frame {} stamped {t_s:.3} s is older than the last one; dropped",
                            msg.frame_seq
                        );
                        continue;
                    }
                    let t0 = std::time::Instant::now();
                    let changes = s.tracker.step(t_s, &observations);
                    counters.set(crate::kit::health::LATENCY_US, t0.elapsed().as_micros() as u64);
                    counters.add(FRAMES, 1);
                    counters.add(crate::kit::health::MESSAGES, 1);
                    for id in &changes.confirmed {
                        counters.add(CONFIRMED, 1);
                        let _ = register_tx.send(*id);
                    }
                    for id in &changes.lost {
                        counters.add(LOST, 1);
                        let trace = trace_id(id);
                        let _e = object_span(&uuid::Uuid::from_bytes(*id)).entered();
                        tracing::warn!(trace_id = %trace, "tracker: expected in view but unseen; lost");
                        pubs.alerts.raise(
                            m::Alert::WARNING as u8,
                            "object_lost",
                            Some(id),
                            format!(
                                "object {trace} was expected in the camera's view but not seen; \
                                 its track is lost"
                            ),
                        );
                    }
                    s.scene.forget(&changes.removed);
                    for id in &changes.removed {
                        s.registered.remove(id);
                        s.failed_rounds.remove(id);
                    }
                    let out = tracks_msg(&s.tracker);
                    drop(s);
                    if let Err(e) = pubs.tracks.publish(&out) {
                        tracing::warn!("tracker: publishing tracks: {e}");
                    }
                }
            }));
        }
        // Encoder readings.
        if let Some(mut encoder) = encoder {
            let shared = shared.clone();
            self.tasks.push(tokio::spawn(async move {
                while let Some(msg) = encoder.next().await {
                    lock(&shared).tracker.encoder(
                        seconds(&msg.header.stamp),
                        msg.speed_mps,
                        msg.stddev_mps,
                    );
                }
            }));
        }
        // Object states and pick points, for the markers.
        {
            let shared = shared.clone();
            self.tasks.push(tokio::spawn(async move {
                while let Some(e) = events.next().await {
                    if let Ok(id) = <[u8; 16]>::try_from(e.object_id.uuid.as_slice()) {
                        let s = &mut *lock(&shared);
                        s.scene.heard_state(s.tracker.tracks(), id, e.to_state.id);
                    }
                }
            }));
        }
        {
            let shared = shared.clone();
            self.tasks.push(tokio::spawn(async move {
                while let Some(a) = assignments.next().await {
                    if let Ok(id) = <[u8; 16]>::try_from(a.object_id.uuid.as_slice()) {
                        let q = &a.predicted_pick_position;
                        let s = &mut *lock(&shared);
                        s.scene
                            .heard_pick_point(s.tracker.tracks(), id, [q.x, q.y, q.z]);
                    }
                }
            }));
        }
        // belt/speed and markers, periodically.
        {
            let (shared, pubs) = (shared.clone(), pubs.clone());
            let (speed_period, markers_period) = (
                Duration::from_secs_f64(p.speed_period_s),
                Duration::from_secs_f64(p.markers_period_s),
            );
            self.tasks.push(tokio::spawn(async move {
                let mut speed_tick = tokio::time::interval(speed_period);
                let mut markers_tick = tokio::time::interval(markers_period);
                loop {
                    tokio::select! {
                        _ = speed_tick.tick() => {
                            let msg = {
                                let s = lock(&shared);
                                s.tracker.now_s().map(|_| speed_msg(&s.tracker))
                            };
                            if let Some(msg) = msg {
                                let _ = pubs.speed.publish(&msg);
                            }
                        }
                        _ = markers_tick.tick() => {
                            let msg = {
                                let s = lock(&shared);
                                s.tracker.now_s().map(|t| markers(&stamp(t), s.tracker.tracks(), &s.scene))
                            };
                            if let Some(msg) = msg {
                                let _ = pubs.markers.publish(&msg);
                            }
                        }
                    }
                }
            }));
        }
        // Registration: find the store now, not at the first object.
        if let Some(c) = &caller {
            self.tasks
                .push(c.await_server_task(crate::kit::call::SERVER_WAIT));
        }
        {
            let (shared, pubs, counters) = (shared.clone(), pubs.clone(), self.counters.clone());
            let requeue = Backoff {
                initial: REQUEUE_FIRST.min(Duration::from_secs_f64(p.register_requeue_s)),
                multiplier: 2.0,
                max: Duration::from_secs_f64(p.register_requeue_s),
                jitter: 0.0,
            };
            self.tasks.push(tokio::spawn(async move {
                while let Some(id) = register_rx.recv().await {
                    let Some(caller) = &caller else { continue };
                    // The track as it is now; gone or already registered: nothing to do.
                    let request = {
                        let s = lock(&shared);
                        if s.registered.contains(&id) {
                            continue;
                        }
                        s.tracker
                            .tracks()
                            .iter()
                            .find(|t| t.object_id == id)
                            .map(|t| {
                                let now_s = s.tracker.now_s().unwrap_or(t.last_seen_s);
                                (t.clone(), s.tracker.lane_of(t.position().y), now_s)
                            })
                    };
                    let Some((track, lane, now_s)) = request else { continue };
                    let trace = trace_id(&id);
                    let span = object_span(&uuid::Uuid::from_bytes(id));
                    let r = {
                        use tracing::Instrument;
                        caller
                            .call(|rid| register_request(&track, lane, rid, now_s))
                            .instrument(span.clone())
                            .await
                    };
                    let _e = span.enter();
                    match r {
                        Ok(resp) if resp.accepted => {
                            counters.add(REGISTERED, 1);
                            let mut s = lock(&shared);
                            s.registered.insert(id);
                            s.failed_rounds.remove(&id);
                            tracing::debug!(trace_id = %trace, created = resp.created, "registered");
                        }
                        Ok(resp) if !resp.error.starts_with(STORE_UNAVAILABLE) => {
                            // Refused: retrying the same request cannot help.
                            counters.add(REGISTER_FAILED, 1);
                            tracing::error!(trace_id = %trace, "registration refused: {}", resp.error);
                            pubs.alerts.raise(
                                m::Alert::ERROR as u8,
                                "registration_refused",
                                Some(&id),
                                format!("the state manager refused object {trace}: {}", resp.error),
                            );
                        }
                        failed => {
                            // No answer, or the store could not take it now
                            // (a full disk): the same request, later.
                            let e = match failed {
                                Ok(resp) => resp.error,
                                Err(e) => e.to_string(),
                            };
                            counters.add(REGISTER_FAILED, 1);
                            let rounds = {
                                let mut s = lock(&shared);
                                let n = s.failed_rounds.entry(id).or_insert(0);
                                *n += 1;
                                *n
                            };
                            let wait = requeue.delay(rounds, 0.5);
                            tracing::error!(trace_id = %trace, "registration failed: {e}");
                            pubs.alerts.raise(
                                m::Alert::ERROR as u8,
                                "registration_failed",
                                Some(&id),
                                format!(
                                    "object {trace} is not registered ({e}); trying again in {:.2} s",
                                    wait.as_secs_f64()
                                ),
                            );
                            let tx = register_tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(wait).await;
                                let _ = tx.send(id);
                            });
                        }
                    }
                }
            }));
        }
        Ok(())
    }
    fn deactivate(&mut self) -> anyhow::Result<()> {
        // The tracks are kept: activating again carries on from them.
        self.stop();
        Ok(())
    }
    fn release(&mut self) {
        self.stop();
        self.prepared = None;
    }
}

/// The tracker node's `main`.
pub fn main() {
    node::main::<TrackerParams, _, _>("tracker", "/cell", |c| Ok(TrackerNode::new(c)))
}
