//! The example node: the smallest node that uses the whole kit (lifecycle,
//! lifecycle publisher, heartbeat and diagnostics). Copy it to start a node:
//! logic in core.rs, the r2r shell in node.rs, the executable in src/bin.

pub mod core;
pub mod node;
pub mod params;
