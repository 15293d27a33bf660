//! The `detector` node: camera frames in, `detections` (DetectionArray, belt
//! metres) out.

pub mod core;
pub mod homography;
pub mod calibrate;
pub mod params;
pub mod score;
