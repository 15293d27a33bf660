//! The simulated cell: the hardware stand-ins, speaking the real protocols.
//!
//! `params` (checked config) → `belt` and `world` (objects and ground truth)
//! → `vacuum` (picks) and `faults` (injection), tied together on simulated
//! time by `cell`; `render` draws the camera's frames; `grbl` is the GRBL
//! 1.1h emulator on a PTY; `record` writes a video and its truth; `node` is
//! the ROS shell.

pub mod belt;
pub mod cell;
pub mod faults;
pub mod graph;
pub mod grbl;
pub mod harness;
pub mod node;
pub mod node_cell;
pub mod params;
pub mod record;
pub mod render;
pub mod rng;
pub mod truth;
pub mod vacuum;
pub mod world;
