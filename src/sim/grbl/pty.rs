//! The emulator on a real pseudo-terminal, so any GRBL host (ours, or a
//! third-party one) talks to it through a tty as it would to a board. It runs
//! on the wall clock, optionally scaled.

use super::machine::{Config, Machine, State};
use super::settings::Settings;
use crate::kit::worker::Worker;
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the board is advanced while it moves (what the world's
/// physics sees of the gantry), and its shortest wait.
const TICK: Duration = Duration::from_millis(1);

/// The longest wait while nothing is pending on the board: how late an
/// injected fault or a change of the vacuum sensor may be taken up. A
/// board at rest does not wake a thousand times a second for nothing.
const IDLE_WAIT: Duration = Duration::from_millis(10);

/// How long (wall-clock) the emulator's thread may wait for the host's
/// bytes before it must advance the board again: until `quiet_until`
/// (emulator time, run `time_scale` times faster than the wall clock), at
/// least [`TICK`], at most [`IDLE_WAIT`] of either clock.
pub fn wait_for(quiet_until: Option<Duration>, now: Duration, time_scale: f64) -> Duration {
    quiet_until
        .map_or(IDLE_WAIT, |t| t.saturating_sub(now).min(IDLE_WAIT))
        .div_f64(time_scale)
        .clamp(TICK, IDLE_WAIT)
}

/// What the simulator injects into a running board.
enum Inject {
    Alarm(u8),
    Probe(bool),
    FailNext(u8),
    /// Line noise written towards the host.
    Garbage(Vec<u8>),
}

/// The board as last advanced: what the world's physics needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Emulator time (since the clock origin, scaled).
    pub at: Duration,
    /// Machine position, mm.
    pub position_mm: [f64; 3],
    /// Coolant (M8/M7) or spindle (M3/M4) on: the vacuum.
    pub vacuum_on: bool,
    pub state: State,
}

pub struct PtyEmulator {
    path: String,
    link: Option<PathBuf>,
    inject: mpsc::Sender<Inject>,
    snapshot: Arc<Mutex<Snapshot>>,
    worker: Worker,
}

/// A scaled clock from `origin`.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    pub origin: Instant,
    pub time_scale: f64,
}

impl SimClock {
    pub fn new(time_scale: f64) -> Self {
        SimClock {
            origin: Instant::now(),
            time_scale,
        }
    }
    pub fn now(&self) -> Duration {
        Duration::from_secs_f64(self.origin.elapsed().as_secs_f64() * self.time_scale)
    }
    /// The wall-clock instant at simulated time `t`.
    pub fn instant_at(&self, t: Duration) -> Instant {
        self.origin + Duration::from_secs_f64(t.as_secs_f64() / self.time_scale)
    }
}

/// Points `link` at `target`, replacing an old symlink (never a file).
fn make_link(link: &Path, target: &str) -> std::io::Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(link) {
        if !meta.file_type().is_symlink() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a symlink; not replacing it",
                link.display()
            )));
        }
        std::fs::remove_file(link)?;
    }
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::os::unix::fs::symlink(target, link)
        .map_err(|e| std::io::Error::new(e.kind(), format!("symlink {}: {e}", link.display())))
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
        Self::start_on(config, settings, SimClock::new(time_scale), None)
    }

    /// Powers on a board on `clock` (shared with the world), optionally
    /// with a symlink to its PTY at `link`.
    pub fn start_on(
        config: Config,
        settings: Settings,
        clock: SimClock,
        link: Option<&Path>,
    ) -> std::io::Result<Self> {
        Self::start_at(config, settings, clock, link, [0.0; 3])
    }

    /// As [`PtyEmulator::start_on`], with the gantry standing at
    /// `gantry_mm` (machine frame) when the board powers on: grbl counts
    /// from 0 there ([`Machine::powered_on_at`]), and homing starts from
    /// there.
    pub fn start_at(
        config: Config,
        settings: Settings,
        clock: SimClock,
        link: Option<&Path>,
        gantry_mm: [f64; 3],
    ) -> std::io::Result<Self> {
        let (mut master, slave) = TTYPort::pair().map_err(std::io::Error::other)?;
        let path = slave
            .name()
            .ok_or_else(|| std::io::Error::other("the PTY has no path"))?;
        if let Some(l) = link {
            make_link(l, &path)?;
        }
        master.set_timeout(TICK).map_err(std::io::Error::other)?;
        let (inject, inject_rx) = mpsc::channel::<Inject>();
        // Holding the slave open keeps the master readable while no host is
        // connected (otherwise reads fail with EIO).
        let _slave = slave;
        let now = move || clock.now();
        let mut m = Machine::new(config, settings, now()).powered_on_at(gantry_mm);
        let snapshot = Arc::new(Mutex::new(Snapshot {
            at: now(),
            position_mm: m.position(),
            vacuum_on: m.vacuum_on(),
            state: m.state(),
        }));
        let shared = snapshot.clone();
        let mut buf = [0u8; 512];
        let worker = Worker::spawn("grbl-pty", move || {
            let _ = &_slave;
            let _ = master.set_timeout(wait_for(m.quiet_until(), now(), clock.time_scale));
            match master.read(&mut buf) {
                Ok(n) if n > 0 => m.receive(now(), &buf[..n]),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => std::thread::sleep(TICK),
            }
            let mut noise = Vec::new();
            while let Ok(i) = inject_rx.try_recv() {
                match i {
                    Inject::Alarm(code) => m.raise_alarm(now(), code),
                    Inject::Probe(on) => m.set_probe(on),
                    Inject::FailNext(code) => m.fail_next_line(code),
                    Inject::Garbage(b) => noise.extend(b),
                }
            }
            let t = now();
            m.advance(t);
            *shared.lock().unwrap_or_else(|e| e.into_inner()) = Snapshot {
                at: t,
                position_mm: m.position(),
                vacuum_on: m.vacuum_on(),
                state: m.state(),
            };
            let mut out = noise;
            out.extend(m.take_output());
            if !out.is_empty() {
                let _ = master.write_all(&out);
            }
        })?;
        Ok(PtyEmulator {
            path,
            link: link.map(Path::to_path_buf),
            inject,
            snapshot,
            worker,
        })
    }

    /// The tty a host opens, e.g. /dev/pts/3.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The board as last advanced.
    pub fn snapshot(&self) -> Snapshot {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fault injection: an unsolicited ALARM:`code`.
    pub fn raise_alarm(&self, code: u8) {
        let _ = self.inject.send(Inject::Alarm(code));
    }

    /// The vacuum sensor on the probe input: something is held.
    pub fn set_vacuum_sensor(&self, holding: bool) {
        let _ = self.inject.send(Inject::Probe(holding));
    }

    /// Fault injection: the next line is refused with `error:code`.
    pub fn fail_next_line(&self, code: u8) {
        let _ = self.inject.send(Inject::FailNext(code));
    }

    /// Fault injection: bytes of line noise towards the host.
    pub fn write_garbage(&self, bytes: Vec<u8>) {
        let _ = self.inject.send(Inject::Garbage(bytes));
    }

    /// Powers the board off; the PTY closes and the symlink goes.
    pub fn stop(&mut self) {
        self.worker.stop();
        if let Some(l) = self.link.take() {
            let _ = std::fs::remove_file(l);
        }
    }
}

impl Drop for PtyEmulator {
    fn drop(&mut self) {
        self.stop();
    }
}
