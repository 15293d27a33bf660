//! The `detector` node: camera frames in, `detections` (DetectionArray, belt
//! metres) out.

pub mod calibrate;
pub mod core;
pub mod homography;
pub mod node;
pub mod params;
pub mod score;
