//! The motion controller (in progress): one lifecycle node per CNC, GRBL
//! over a serial port.

pub mod grbl;
pub mod node;
pub mod params;
pub mod pick;
pub mod plan;
