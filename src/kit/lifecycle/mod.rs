//! Lifecycle nodes for r2r, which has none (its issue 102): the standard
//! state machine behind the standard lifecycle_msgs services and topic.

pub mod core;
pub mod node;

pub use self::core::{CallbackResult, State};
pub use node::{
    ActiveGate, Callbacks, Fault, FaultReceiver, Faults, LifecycleHandle, LifecyclePublisher,
    Recovery, Steps,
};
