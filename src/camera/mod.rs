//! The `camera` node: frames from a source (`sim`, `file:<video>`,
//! `v4l2:<device>`) on `camera/image_raw`, stamped with their exposure.

pub mod core;
pub mod node;
pub mod params;
pub mod source;
