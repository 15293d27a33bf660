//! Camera frames between nodes, with no needless copies.
//!
//! A frame is an OpenCV image behind an `Arc`. A [`FramePublisher`] hands
//! each frame to subscribers in the same process as the `Arc` (no copy,
//! nothing serialised) and publishes a sensor_msgs/Image on DDS only when
//! some subscriber outside the process is listening (rviz, a recorder,
//! another machine). [`subscribe`] takes the in-process path when a
//! publisher of that topic lives in this process, and DDS otherwise, where
//! it checks the image's encoding and size before anything uses it.

use crate::kit::lifecycle::ActiveGate;
use futures::{Stream, StreamExt};
use opencv::core::{Mat, CV_8UC3};
use opencv::prelude::*;
use r2r::builtin_interfaces::msg::Time;
use r2r::sensor_msgs::msg::Image;
use r2r::QosProfile;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use tokio::sync::broadcast;

/// One camera frame: 8-bit BGR, stamped with its exposure time.
#[derive(Debug)]
pub struct Frame {
    pub seq: u64,
    pub stamp: Time,
    pub frame_id: String,
    pub image: Mat,
}

pub type SharedFrame = Arc<Frame>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error("image encoding {0:?}: only bgr8 is taken")]
    Encoding(String),
    #[error("image of {width}×{height} with step {step} carries {len} bytes, not {expected}")]
    Size {
        width: u32,
        height: u32,
        step: u32,
        len: usize,
        expected: usize,
    },
    #[error("OpenCV: {0}")]
    OpenCv(String),
}

/// One topic's in-process channel and how many publishers of it live in
/// this process. A channel outlives its publishers, so a subscriber keeps
/// receiving when a camera reconnects.
struct Local {
    tx: broadcast::Sender<SharedFrame>,
    publishers: usize,
}

/// In-process channels by resolved topic name.
static LOCAL: LazyLock<Mutex<HashMap<String, Local>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn local_channel(topic: &str) -> broadcast::Sender<SharedFrame> {
    let mut map = LOCAL.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(topic.to_string())
        .or_insert_with(|| Local {
            tx: broadcast::channel(4).0,
            publishers: 0,
        })
        .tx
        .clone()
}

fn local_publishers(topic: &str) -> usize {
    LOCAL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(topic)
        .map_or(0, |l| l.publishers)
}

/// `topic` resolved against `namespace` (absolute names stay).
pub fn resolve(namespace: &str, topic: &str) -> String {
    if topic.starts_with('/') {
        topic.to_string()
    } else {
        format!("{}/{}", namespace.trim_end_matches('/'), topic)
    }
}

/// A frame as a sensor_msgs/Image (the one copy DDS needs).
pub fn image_msg(frame: &Frame) -> Result<Image, FrameError> {
    let mut msg = Image::default();
    msg.header.stamp = frame.stamp.clone();
    msg.header.frame_id = frame.frame_id.clone();
    msg.height = frame.image.rows() as u32;
    msg.width = frame.image.cols() as u32;
    msg.encoding = "bgr8".into();
    msg.step = frame.image.cols() as u32 * 3;
    msg.data = if frame.image.is_continuous() {
        frame
            .image
            .data_bytes()
            .map_err(|e| FrameError::OpenCv(e.to_string()))?
            .to_vec()
    } else {
        let mut c = Mat::default();
        frame
            .image
            .copy_to(&mut c)
            .map_err(|e| FrameError::OpenCv(e.to_string()))?;
        c.data_bytes()
            .map_err(|e| FrameError::OpenCv(e.to_string()))?
            .to_vec()
    };
    Ok(msg)
}

/// A sensor_msgs/Image as a frame, checked: bgr8, and as many bytes as its
/// size says.
pub fn from_image(msg: Image, seq: u64) -> Result<Frame, FrameError> {
    if msg.encoding != "bgr8" {
        return Err(FrameError::Encoding(msg.encoding));
    }
    let expected = msg.step as usize * msg.height as usize;
    if msg.step < msg.width * 3 || msg.data.len() != expected || msg.width == 0 {
        return Err(FrameError::Size {
            width: msg.width,
            height: msg.height,
            step: msg.step,
            len: msg.data.len(),
            expected,
        });
    }
    let rows = msg.height as i32;
    let step = msg.step as usize;
    let image = if step == msg.width as usize * 3 {
        let flat = Mat::from_slice(&msg.data).map_err(|e| FrameError::OpenCv(e.to_string()))?;
        flat.reshape(3, rows)
            .and_then(|m| m.try_clone())
            .map_err(|e| FrameError::OpenCv(e.to_string()))?
    } else {
        let mut m = Mat::new_rows_cols_with_default(
            rows,
            msg.width as i32,
            CV_8UC3,
            opencv::core::Scalar::all(0.0),
        )
        .map_err(|e| FrameError::OpenCv(e.to_string()))?;
        for r in 0..rows {
            let src = &msg.data[r as usize * step..r as usize * step + msg.width as usize * 3];
            m.at_row_mut::<u8>(r)
                .map_err(|e| FrameError::OpenCv(e.to_string()))?
                .copy_from_slice(src);
        }
        m
    };
    Ok(Frame {
        seq,
        stamp: msg.header.stamp,
        frame_id: msg.header.frame_id,
        image,
    })
}

/// Publishes frames: in process as `Arc`s, on DDS when someone outside listens.
pub struct FramePublisher {
    topic: String,
    dds: r2r::Publisher<Image>,
    local: broadcast::Sender<SharedFrame>,
    gate: ActiveGate,
}

impl FramePublisher {
    /// A publisher of `topic` (resolved against `namespace`) that publishes
    /// while `gate` is open.
    pub fn new(
        node: &mut r2r::Node,
        namespace: &str,
        topic: &str,
        gate: ActiveGate,
    ) -> anyhow::Result<Self> {
        let topic = resolve(namespace, topic);
        let dds = node.create_publisher::<Image>(&topic, QosProfile::sensor_data())?;
        let local = local_channel(&topic);
        if let Some(l) = LOCAL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&topic)
        {
            l.publishers += 1;
        }
        Ok(FramePublisher {
            topic,
            dds,
            local,
            gate,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes `frame` if the node is active; returns whether it went out.
    /// Readers in this process get it first: copying 2.7 MB into an Image
    /// for another process's reader (rviz, a recorder) must not delay the
    /// detector.
    pub fn publish(&self, frame: SharedFrame) -> anyhow::Result<bool> {
        if !self.gate.is_open() {
            return Ok(false);
        }
        let _ = self.local.send(frame.clone());
        if self.dds.get_inter_process_subscription_count()? > 0 {
            self.dds.publish(&image_msg(&frame)?)?;
        }
        Ok(true)
    }
}

impl Drop for FramePublisher {
    fn drop(&mut self) {
        if let Some(l) = LOCAL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&self.topic)
        {
            l.publishers = l.publishers.saturating_sub(1);
        }
    }
}

/// How a subscription gets its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    InProcess,
    Dds,
}

/// What a subscription yields: a frame, frames lost to a slow reader, or
/// a message that is not a frame we take.
#[derive(Debug)]
pub enum Received {
    Frame(SharedFrame),
    Lagged(u64),
    Bad(FrameError),
}

/// Frames of one topic. Until a publisher of the topic lives in this
/// process, frames come from DDS; from the first in-process frame on, the
/// DDS subscription is dropped and frames come as shared pointers.
pub struct FrameStream {
    pub path: Path,
    topic: String,
    local: broadcast::Receiver<SharedFrame>,
    dds: Option<Pin<Box<dyn Stream<Item = Image> + Send>>>,
    seq: u64,
}

impl FrameStream {
    fn go_local(&mut self) {
        self.dds = None;
        self.path = Path::InProcess;
    }

    /// The next frame; `None` when no publisher can reach it any more.
    pub async fn next(&mut self) -> Option<Received> {
        loop {
            let Some(dds) = self.dds.as_mut() else {
                return match self.local.recv().await {
                    Ok(f) => Some(Received::Frame(f)),
                    Err(broadcast::error::RecvError::Lagged(n)) => Some(Received::Lagged(n)),
                    Err(broadcast::error::RecvError::Closed) => None,
                };
            };
            tokio::select! {
                r = self.local.recv() => {
                    self.go_local();
                    match r {
                        Ok(f) => return Some(Received::Frame(f)),
                        Err(broadcast::error::RecvError::Lagged(n)) => return Some(Received::Lagged(n)),
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
                msg = dds.next() => {
                    let msg = msg?;
                    if local_publishers(&self.topic) > 0 {
                        // A publisher here now: its frames come in process.
                        self.go_local();
                        continue;
                    }
                    self.seq += 1;
                    return Some(match from_image(msg, self.seq) {
                        Ok(f) => Received::Frame(Arc::new(f)),
                        Err(e) => Received::Bad(e),
                    });
                }
            }
        }
    }
}

/// Frames of `topic` (resolved against `namespace`): in process when this
/// process publishes it, else from DDS (sensor-data QoS) until it does.
pub fn subscribe(
    node: &mut r2r::Node,
    namespace: &str,
    topic: &str,
) -> anyhow::Result<FrameStream> {
    let topic = resolve(namespace, topic);
    let local = local_channel(&topic).subscribe();
    let dds = if local_publishers(&topic) > 0 {
        None
    } else {
        let s = node.subscribe::<Image>(&topic, QosProfile::sensor_data())?;
        Some(Box::pin(s) as Pin<Box<dyn Stream<Item = Image> + Send>>)
    };
    Ok(FrameStream {
        path: if dds.is_some() {
            Path::Dds
        } else {
            Path::InProcess
        },
        topic,
        local,
        dds,
        seq: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_round_trips_and_bad_ones_are_named() {
        let image = Mat::new_rows_cols_with_default(
            4,
            5,
            CV_8UC3,
            opencv::core::Scalar::new(1.0, 2.0, 3.0, 0.0),
        )
        .unwrap();
        let f = Frame {
            seq: 7,
            stamp: Time { sec: 3, nanosec: 4 },
            frame_id: "camera".into(),
            image,
        };
        let msg = image_msg(&f).unwrap();
        assert_eq!((msg.width, msg.height, msg.step), (5, 4, 15));
        let back = from_image(msg.clone(), 7).unwrap();
        assert_eq!(
            back.image.data_bytes().unwrap(),
            f.image.data_bytes().unwrap()
        );
        assert_eq!(back.stamp, f.stamp);

        let mono = Image {
            encoding: "mono8".into(),
            ..msg.clone()
        };
        assert_eq!(
            from_image(mono, 0).unwrap_err(),
            FrameError::Encoding("mono8".into())
        );
        let short = Image {
            data: vec![0; 10],
            ..msg
        };
        let e = from_image(short, 0).unwrap_err().to_string();
        assert!(e.contains("carries 10 bytes, not 60"), "{e}");
    }
}
