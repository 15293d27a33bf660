//! The object state manager: the single source of truth for every object,
//! in SQLite. `lifecycle` is the legal transitions; `store` the durable,
//! compare-and-set store. (The node shell comes with the rest of issue 7.)

pub mod lifecycle;
pub mod store;
