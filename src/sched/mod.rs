//! The assignment scheduler's pure core: the reach model shared with the
//! motion controller, the policies, the offline oracle, and a run of a
//! policy over an arrival list. (The r2r node comes with issue 9's
//! protocol work.)

pub mod eval;
pub mod oracle;
pub mod policy;
pub mod protocol;
pub mod reach;
pub mod scenario;
