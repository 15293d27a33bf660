//! The node kit: what every cncpick node shares. No node rolls its own.

pub mod app;
pub mod call;
pub mod env;
pub mod spin;
pub mod testing;
pub mod time;
