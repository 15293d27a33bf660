//! cncpick: the controller of a vision-guided conveyor picking cell.
//!
//! Every node has a pure core (no ROS types, time passed in) and a thin r2r
//! shell; the shared pieces every node needs live in [`kit`].

pub mod bag;
pub mod camera;
pub mod cell;
pub mod demo;
pub mod detector;
pub mod example;
pub mod interop;
pub mod kinematics;
pub mod kit;
pub mod manager;
pub mod motion;
pub mod sched;
pub mod sim;
pub mod state;
pub mod tracker;

/// The generated cncpick_msgs bindings (messages, services, the PickObject action).
pub use r2r::cncpick_msgs as msgs;
