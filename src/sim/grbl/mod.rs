//! A GRBL 1.1h emulator (../shared/docs/grbl-protocol.md): `settings` and
//! `gcode` parse, `machine` is the firmware's behaviour as a pure state
//! machine with time passed in.

pub mod gcode;
pub mod machine;
pub mod pty;
pub mod settings;
