//! The GRBL 1.1 client: `reply` parses what the board sends, `stream`
//! counts characters against its receive buffer, `client` owns the port.

pub mod client;
pub mod reply;
pub mod stream;
