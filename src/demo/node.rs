//! The r2r shell of the demo graph.

use super::core::{DemoReport, RoundTrips};
use crate::kit::spin::SharedNode;
use crate::kit::time::wall_now;
use crate::msgs::msg::{Detection, DetectionArray, Heartbeat, ObjectEvent, ObjectState};
use anyhow::Context as _;
use futures::StreamExt;
use r2r::QosProfile;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const DETECTIONS_TOPIC: &str = "detections";
pub const EVENTS_TOPIC: &str = "objects/events";
pub const HEARTBEAT_TOPIC: &str = "heartbeat";

/// ObjectEvent QoS from architecture.md: reliable, transient_local.
pub use crate::kit::qos::events as events_qos;

fn detections_qos() -> QosProfile {
    QosProfile::default().reliable().keep_last(100)
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub frames: u64,
    pub rate_hz: f64,
    pub objects_per_frame: u32,
    /// How long to wait for a registry to subscribe before giving up.
    pub match_timeout: Duration,
    /// How long to wait for the last events after the last frame.
    pub settle: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            frames: 100,
            rate_hz: 20.0,
            objects_per_frame: 2,
            match_timeout: Duration::from_secs(10),
            settle: Duration::from_secs(2),
        }
    }
}

/// Publishes `cfg.frames` detection frames and collects the object events
/// that come back. `progress(frames_sent, events_back)` is called as it goes.
pub async fn run_source(
    node: &SharedNode,
    cfg: &SourceConfig,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<DemoReport> {
    anyhow::ensure!(
        cfg.rate_hz > 0.0 && cfg.rate_hz.is_finite(),
        "rate_hz must be a positive number, got {}",
        cfg.rate_hz
    );
    let (publisher, mut events) = {
        let mut n = node.lock();
        let p = n.create_publisher::<DetectionArray>(DETECTIONS_TOPIC, detections_qos())?;
        let s = n.subscribe::<ObjectEvent>(EVENTS_TOPIC, events_qos())?;
        (p, s)
    };
    tokio::time::timeout(cfg.match_timeout, publisher.wait_for_inter_process_subscribers()?)
        .await
        .with_context(|| {
            format!(
                "no subscriber on {DETECTIONS_TOPIC} within {:?}: is the registry node running in this ROS_DOMAIN_ID?",
                cfg.match_timeout
            )
        })??;

    let start = Instant::now();
    let mut trips = RoundTrips::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.rate_hz));
    let mut sent = 0u64;
    let mut back = 0u64;
    let mut settle_until: Option<Instant> = None;
    loop {
        if sent == cfg.frames {
            let until = *settle_until.get_or_insert_with(|| Instant::now() + cfg.settle);
            if trips.outstanding() == 0 || Instant::now() >= until {
                break;
            }
        }
        tokio::select! {
            _ = tick.tick(), if sent < cfg.frames => {
                let ids: Vec<[u8; 16]> = (0..cfg.objects_per_frame)
                    .map(|_| *uuid::Uuid::new_v4().as_bytes())
                    .collect();
                publisher.publish(&frame(sent, &ids))?;
                trips.sent(start.elapsed(), &ids);
                sent += 1;
                progress(sent, back);
            }
            ev = events.next() => match ev {
                Some(ev) => {
                    trips.returned(start.elapsed(), uuid_bytes(&ev.object_id.uuid));
                    back += 1;
                    progress(sent, back);
                }
                None => anyhow::bail!("the {EVENTS_TOPIC} subscription closed"),
            },
            _ = tokio::time::sleep_until(settle_until.unwrap_or_else(Instant::now)), if settle_until.is_some() => {}
        }
    }
    Ok(trips.report())
}

fn uuid_bytes(v: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = v.len().min(16);
    out[..n].copy_from_slice(&v[..n]);
    out
}

fn frame(seq: u64, ids: &[[u8; 16]]) -> DetectionArray {
    let mut msg = DetectionArray {
        frame_seq: seq,
        ..Default::default()
    };
    msg.header.stamp = wall_now();
    msg.header.frame_id = "belt".into();
    for (k, id) in ids.iter().enumerate() {
        let mut d = Detection::default();
        d.object_id.uuid = id.to_vec();
        d.lane = (k % 4) as u8;
        d.vision_id = format!(
            "vision_{}{:09}_{}_{}",
            msg.header.stamp.sec, msg.header.stamp.nanosec, d.lane, seq
        );
        d.position.x = 0.1;
        d.position.y = 0.05 + 0.1 * k as f64;
        d.size_x_m = 0.04;
        d.size_y_m = 0.04;
        d.class_id = "red".into();
        d.confidence = 1.0;
        msg.detections.push(d);
    }
    msg
}

/// The registry side: answers every new object with one ObjectEvent
/// (UNKNOWN -> DETECTED) and publishes a heartbeat once a second.
pub struct Registry {
    pub received_detections: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Registry {
    pub fn start(node: &SharedNode, node_name: &str) -> anyhow::Result<Registry> {
        let (mut detections, events, heartbeat) = {
            let mut n = node.lock();
            (
                n.subscribe::<DetectionArray>(DETECTIONS_TOPIC, detections_qos())?,
                n.create_publisher::<ObjectEvent>(EVENTS_TOPIC, events_qos())?,
                n.create_publisher::<Heartbeat>(HEARTBEAT_TOPIC, QosProfile::default())?,
            )
        };
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let name = node_name.to_string();
        let task = tokio::spawn(async move {
            let mut seen: HashSet<Vec<u8>> = HashSet::new();
            let mut seq = 0u64;
            let mut beat = tokio::time::interval(Duration::from_secs(1));
            let mut beats = 0u64;
            loop {
                tokio::select! {
                    msg = detections.next() => {
                        let Some(msg) = msg else { break };
                        for d in msg.detections {
                            counter.fetch_add(1, Ordering::Relaxed);
                            if !seen.insert(d.object_id.uuid.clone()) {
                                continue;
                            }
                            seq += 1;
                            let mut ev = ObjectEvent {
                                seq,
                                object_id: d.object_id,
                                vision_id: d.vision_id,
                                actor: name.clone(),
                                reason: "registered".into(),
                                belt_position_m: d.position.x,
                                ..Default::default()
                            };
                            ev.header.stamp = wall_now();
                            ev.header.frame_id = "belt".into();
                            ev.from_state.id = ObjectState::UNKNOWN as u8;
                            ev.to_state.id = ObjectState::DETECTED as u8;
                            if let Err(e) = events.publish(&ev) {
                                tracing::warn!("publishing object event {seq}: {e}");
                            }
                        }
                    }
                    _ = beat.tick() => {
                        beats += 1;
                        let hb = Heartbeat { node: name.clone(), seq: beats, state: 3, stamp: wall_now() };
                        if let Err(e) = heartbeat.publish(&hb) {
                            tracing::warn!("publishing heartbeat: {e}");
                        }
                    }
                }
            }
        });
        Ok(Registry {
            received_detections: received,
            task,
        })
    }

    /// Stops the registry task and waits until it has released its handles.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
