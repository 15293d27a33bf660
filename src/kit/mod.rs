//! The node kit: what every cncpick node shares. No node rolls its own.

pub mod alerts;
pub mod app;
pub mod breaker;
pub mod call;
pub mod env;
pub mod frames;
pub mod health;
pub mod lifecycle;
pub mod node;
pub mod params;
pub mod qos;
pub mod retry;
pub mod shm;
pub mod spin;
pub mod testing;
pub mod time;
pub mod trace;
pub mod worker;
