//! The assignment scheduler: the reach model shared with the motion
//! controller, the policies, the assignment protocol, the node's pure core
//! and its r2r shell, the offline oracle, and a run of a policy over an
//! arrival list.

pub mod core;
pub mod eval;
pub mod node;
pub mod oracle;
pub mod params;
pub mod policy;
pub mod protocol;
pub mod reach;
pub mod scenario;
