//! The simulated cell: the hardware stand-ins, speaking the real protocols.

pub mod grbl;
