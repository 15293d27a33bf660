//! The emulator on a real pseudo-terminal, so any GRBL host (ours, or a
//! third-party one) talks to it through a tty as it would to a board. It runs
//! on the wall clock, optionally scaled.

use super::machine::{Config, Machine};
use super::settings::Settings;
use crate::kit::worker::Worker;
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the board is advanced when nothing arrives.
const TICK: Duration = Duration::from_millis(1);

pub struct PtyEmulator {
    path: String,
    faults: mpsc::Sender<u8>,
    worker: Worker,
}

impl PtyEmulator {
    /// Powers on a board behind a new PTY. `time_scale` > 1 runs it faster
    /// than real time.
    pub fn start(config: Config, settings: Settings, time_scale: f64) -> std::io::Result<Self> {
        if !(time_scale.is_finite() && time_scale > 0.0) {
            return Err(std::io::Error::other(format!(
                "time scale must be a positive number, got {time_scale}"
            )));
        }
        let (mut master, slave) = TTYPort::pair().map_err(std::io::Error::other)?;
        let path = slave
            .name()
            .ok_or_else(|| std::io::Error::other("the PTY has no path"))?;
        master.set_timeout(TICK).map_err(std::io::Error::other)?;
        let (faults, fault_rx) = mpsc::channel::<u8>();
        // Holding the slave open keeps the master readable while no host is
        // connected (otherwise reads fail with EIO).
        let _slave = slave;
        let t0 = Instant::now();
        let now = move || Duration::from_secs_f64(t0.elapsed().as_secs_f64() * time_scale);
        let mut m = Machine::new(config, settings, now());
        let mut buf = [0u8; 512];
        let worker = Worker::spawn("grbl-pty", move || {
            let _ = &_slave;
            match master.read(&mut buf) {
                Ok(n) if n > 0 => m.receive(now(), &buf[..n]),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => std::thread::sleep(TICK),
            }
            while let Ok(code) = fault_rx.try_recv() {
                m.raise_alarm(now(), code);
            }
            m.advance(now());
            let out = m.take_output();
            if !out.is_empty() {
                let _ = master.write_all(&out);
            }
        })?;
        Ok(PtyEmulator {
            path,
            faults,
            worker,
        })
    }

    /// The tty a host opens, e.g. /dev/pts/3.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Fault injection: an unsolicited ALARM:`code`.
    pub fn raise_alarm(&self, code: u8) {
        let _ = self.faults.send(code);
    }

    /// Powers the board off; the PTY closes.
    pub fn stop(&mut self) {
        self.worker.stop();
    }
}
