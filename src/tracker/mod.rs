//! The `tracker` node: detections in, tracks with identities and the
//! belt's speed out.

pub mod assign;
pub mod core;
pub mod kalman;
pub mod markers;
pub mod node;
pub mod params;
pub mod speed;
pub mod truth;
