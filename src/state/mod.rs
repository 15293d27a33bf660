//! The object state manager: the single source of truth for every object,
//! in SQLite. `lifecycle` is the legal transitions; `store` the durable,
//! compare-and-set store. `node` is the r2r shell.

pub mod lifecycle;
pub mod node;
pub mod params;
pub mod snapshot;
pub mod store;
