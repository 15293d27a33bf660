//! A small real graph used by `cncpick run` until the simulated cell exists:
//! a source node publishes DetectionArray frames, a registry node answers each
//! new object with an ObjectEvent, and the source measures the round trip.

pub mod app;
pub mod core;
pub mod node;
