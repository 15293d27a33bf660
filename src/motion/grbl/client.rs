//! The GRBL client: one thread owns the serial port (a real tty), streams
//! lines by character counting, polls `?`, and turns what comes back into
//! replies (to the line they answer) and events (status, alarms, messages,
//! the banner, line noise). Real-time bytes are written at once from the
//! caller's thread, never queued behind lines. Every line's wait is bounded;
//! a line left unanswered gets a feed hold and a soft reset, so the byte
//! count never drifts from the board's.

use super::reply::{self, Reply};
use super::stream::{check_line, LineError, Streamer, RX_BUFFER_BYTES};
use crate::kit::worker::Worker;
use serialport::TTYPort;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot};

/// Real-time commands (grbl-protocol.md): written raw, never answered.
pub mod rt {
    pub const STATUS: u8 = b'?';
    pub const FEED_HOLD: u8 = b'!';
    pub const CYCLE_START: u8 = b'~';
    pub const SOFT_RESET: u8 = 0x18;
    pub const JOG_CANCEL: u8 = 0x85;
}

/// How long one read of the port may block.
const READ_SLICE: Duration = Duration::from_millis(2);
/// How long a safe stop waits for the machine to come to rest before the
/// reset.
pub const STOP_WAIT: Duration = Duration::from_secs(1);
/// A line longer than this without a newline is noise.
const MAX_INCOMING: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    pub path: String,
    pub baud: u32,
    /// grbl_command_response_s: how long a line may wait for its reply.
    pub response_timeout: Duration,
    pub rx_buffer_bytes: usize,
    /// Time between `?` polls (0: none).
    pub poll_period: Duration,
}

impl ClientConfig {
    pub fn new(path: &str) -> Self {
        ClientConfig {
            path: path.into(),
            baud: 115_200,
            response_timeout: Duration::from_secs(2),
            rx_buffer_bytes: RX_BUFFER_BYTES,
            poll_period: Duration::from_millis(200),
        }
    }
}

/// A line's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Error(u8),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrblError {
    #[error("{path}: cannot open the port: {why}")]
    Open { path: String, why: String },
    #[error("{path}: {why}")]
    Io { path: String, why: String },
    #[error(transparent)]
    Line(#[from] LineError),
    #[error(
        "{path}: {line:?} got no reply within {timeout_ms} ms; stopped with feed hold, then reset"
    )]
    Timeout {
        path: String,
        line: String,
        timeout_ms: u128,
    },
    #[error("{path}: {line:?} was not answered: the board reset")]
    Reset { path: String, line: String },
    #[error("{path}: {line:?} was not answered: ALARM:{code} ({})", reply::alarm_text(*code))]
    Alarm {
        path: String,
        line: String,
        code: u8,
    },
    #[error("{path}: the port closed: {why}")]
    Disconnected { path: String, why: String },
    #[error("{path}: no banner within {timeout_ms} ms after a soft reset")]
    NoBanner { path: String, timeout_ms: u128 },
}

/// What the board says that is not a reply to a line: any [`Reply`] but
/// `Ok`, `Error` and `StartupEcho` (a reply with no line in flight comes
/// as `Garbage`), or the port closing.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Line(Reply),
    Disconnected(String),
}

type Waiter = oneshot::Sender<Result<Answer, GrblError>>;

enum Cmd {
    Line(u64, String, Waiter),
    /// A soft reset was written: nothing in flight will be answered, and no
    /// line goes out until the banner.
    Reset,
    /// Drop what has arrived (a banner printed before this one), then
    /// write a soft reset; as Reset after that.
    SoftReset,
    PollPeriod(Duration),
}

/// The port thread's state.
struct Port {
    path: String,
    port: TTYPort,
    writer: Writer,
    stream: Streamer,
    queued: VecDeque<(u64, String, Waiter)>,
    waiting: HashMap<u64, (String, Waiter)>,
    events: broadcast::Sender<Event>,
    poll_period: Duration,
    next_poll: Instant,
    origin: Instant,
    incoming: Vec<u8>,
    awaiting_banner: bool,
    closed: bool,
}

/// The port's write side; None once closed.
type Writer = Arc<Mutex<Option<TTYPort>>>;

fn write_to(writer: &Writer, bytes: &[u8]) -> std::io::Result<()> {
    match writer.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        Some(w) => w.write_all(bytes),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "the port is closed",
        )),
    }
}

impl Port {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        write_to(&self.writer, bytes)
    }

    fn fail_all(&mut self, err: impl Fn(&str) -> GrblError) {
        let lost: Vec<u64> = self.stream.reset().into_iter().map(|f| f.id).collect();
        for id in lost {
            if let Some((line, w)) = self.waiting.remove(&id) {
                let _ = w.send(Err(err(&line)));
            }
        }
    }

    fn after_reset(&mut self) {
        let path = self.path.clone();
        self.fail_all(|l| GrblError::Reset {
            path: path.clone(),
            line: l.into(),
        });
        self.awaiting_banner = true;
    }

    fn disconnect(&mut self, why: String) {
        let path = self.path.clone();
        self.fail_all(|_| GrblError::Disconnected {
            path: path.clone(),
            why: why.clone(),
        });
        for (_, _, w) in self.queued.drain(..) {
            let _ = w.send(Err(GrblError::Disconnected {
                path: path.clone(),
                why: why.clone(),
            }));
        }
        let _ = self.events.send(Event::Disconnected(why));
        self.closed = true;
    }

    fn on_line(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return; // grbl's banner starts with a bare \r\n
        }
        let path = self.path.clone();
        let ev = match reply::parse(line) {
            r @ (Reply::Ok | Reply::Error(_)) => {
                let answer = match r {
                    Reply::Error(c) => Answer::Error(c),
                    _ => Answer::Ok,
                };
                match self.stream.answered() {
                    Some(f) => {
                        if let Some((_, w)) = self.waiting.remove(&f.id) {
                            let _ = w.send(Ok(answer));
                        }
                        return;
                    }
                    None => Reply::Garbage {
                        line: line.into(),
                        why: "a reply with no line in flight".into(),
                    },
                }
            }
            Reply::Alarm(code) => {
                // Lines in flight are discarded (a critical alarm answers
                // nothing until a reset; a reset in motion lost them).
                self.fail_all(|l| GrblError::Alarm {
                    path: path.clone(),
                    line: l.into(),
                    code,
                });
                Reply::Alarm(code)
            }
            b @ Reply::Banner { .. } => {
                self.fail_all(|l| GrblError::Reset {
                    path: path.clone(),
                    line: l.into(),
                });
                self.awaiting_banner = false;
                b
            }
            Reply::StartupEcho(_) => return,
            other => other,
        };
        let ev = Event::Line(ev);
        let _ = self.events.send(ev);
    }

    fn step(&mut self, cmds: &mpsc::Receiver<Cmd>) {
        if self.closed {
            std::thread::sleep(READ_SLICE);
            return;
        }
        while let Ok(c) = cmds.try_recv() {
            match c {
                Cmd::Line(id, line, w) => self.queued.push_back((id, line, w)),
                Cmd::SoftReset => {
                    let _ =
                        serialport::SerialPort::clear(&self.port, serialport::ClearBuffer::Input);
                    self.incoming.clear();
                    if let Err(e) = self.write(&[rt::SOFT_RESET]) {
                        self.disconnect(e.to_string());
                        return;
                    }
                    self.after_reset();
                }
                Cmd::Reset => self.after_reset(),
                Cmd::PollPeriod(p) => {
                    self.poll_period = p;
                    self.next_poll = Instant::now();
                }
            }
        }
        while let Some((_, line, _)) = self.queued.front() {
            if self.awaiting_banner || !self.stream.fits(line.len()) {
                break;
            }
            let (id, line, w) = self.queued.pop_front().expect("front exists");
            if w.is_closed() {
                // Its caller gave up (timed out) before it was sent: it
                // must never move the machine later.
                continue;
            }
            let mut bytes = line.clone().into_bytes();
            bytes.push(b'\n');
            if let Err(e) = self.write(&bytes) {
                let _ = w.send(Err(GrblError::Io {
                    path: self.path.clone(),
                    why: e.to_string(),
                }));
                self.disconnect(e.to_string());
                return;
            }
            self.stream.sent(id, line.len(), self.origin.elapsed());
            self.waiting.insert(id, (line, w));
        }
        if !self.poll_period.is_zero() && Instant::now() >= self.next_poll {
            self.next_poll = Instant::now() + self.poll_period;
            if let Err(e) = self.write(&[rt::STATUS]) {
                self.disconnect(e.to_string());
                return;
            }
        }
        let mut buf = [0u8; 512];
        match self.port.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                for &b in &buf[..n] {
                    if b == b'\n' {
                        let line = std::mem::take(&mut self.incoming);
                        self.on_line(&line);
                    } else {
                        self.incoming.push(b);
                        if self.incoming.len() > MAX_INCOMING {
                            let line = std::mem::take(&mut self.incoming);
                            let _ = self.events.send(Event::Line(Reply::Garbage {
                                line: String::from_utf8_lossy(&line).into(),
                                why: format!("over {MAX_INCOMING} bytes without a newline"),
                            }));
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => self.disconnect(e.to_string()),
        }
    }
}

/// A connection to one GRBL board.
pub struct Grbl {
    config: ClientConfig,
    cmds: mpsc::Sender<Cmd>,
    writer: Writer,
    events: broadcast::Sender<Event>,
    next_id: std::sync::atomic::AtomicU64,
    worker: Mutex<Worker>,
}

impl Grbl {
    /// Opens the port (exclusively) and starts its thread.
    pub fn open(config: ClientConfig) -> Result<Grbl, GrblError> {
        let open_err = |why: String| GrblError::Open {
            path: config.path.clone(),
            why,
        };
        let port = serialport::new(&config.path, config.baud)
            .timeout(READ_SLICE)
            .open_native()
            .map_err(|e| open_err(e.to_string()))?;
        // What the board said before this host opened the port (to a host
        // that died, or to no one) is not about now: a stale `<Idle|...>`
        // read as the answer to our first `?` would have a reset sent into
        // a moving machine (ALARM:3, the position lost, a re-home).
        serialport::SerialPort::clear(&port, serialport::ClearBuffer::Input)
            .map_err(|e| open_err(e.to_string()))?;
        let writer = port
            .try_clone_native()
            .map_err(|e| open_err(e.to_string()))?;
        let writer = Arc::new(Mutex::new(Some(writer)));
        let (events, _) = broadcast::channel(1024);
        let (cmds, rx) = mpsc::channel();
        let mut p = Port {
            path: config.path.clone(),
            port,
            writer: writer.clone(),
            stream: Streamer::new(config.rx_buffer_bytes),
            queued: VecDeque::new(),
            waiting: HashMap::new(),
            events: events.clone(),
            poll_period: config.poll_period,
            next_poll: Instant::now(),
            origin: Instant::now(),
            incoming: Vec::new(),
            awaiting_banner: false,
            closed: false,
        };
        let worker =
            Worker::spawn("grbl-port", move || p.step(&rx)).map_err(|e| open_err(e.to_string()))?;
        Ok(Grbl {
            config,
            cmds,
            writer,
            events,
            next_id: Default::default(),
            worker: Mutex::new(worker),
        })
    }

    pub fn path(&self) -> &str {
        &self.config.path
    }

    /// Everything the board says that is not a reply.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Writes a real-time byte now, ahead of any queued line.
    pub fn realtime(&self, byte: u8) -> Result<(), GrblError> {
        write_to(&self.writer, &[byte]).map_err(|e| GrblError::Io {
            path: self.config.path.clone(),
            why: e.to_string(),
        })?;
        if byte == rt::SOFT_RESET {
            // Nothing in flight will be answered; the count starts over.
            let _ = self.cmds.send(Cmd::Reset);
        }
        Ok(())
    }

    /// Stops the machine keeping its position, then resets (which drops
    /// everything queued and turns spindle and coolant, the vacuum, off):
    /// feed hold now, then the reset once a report says it has stopped
    /// (Hold:0, Idle or Alarm), or after `wait` at most. A reset while
    /// still moving would lose the position (ALARM:3).
    pub async fn stop_safely(&self, wait: Duration) {
        let mut events = self.subscribe();
        let _ = self.realtime(rt::FEED_HOLD);
        let stopped = async {
            loop {
                let _ = self.realtime(rt::STATUS);
                let poll = tokio::time::sleep(Duration::from_millis(20));
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        e = events.recv() => match e {
                            Ok(Event::Line(Reply::Status(s))) => {
                                use super::reply::MachineState as M;
                                if matches!(s.state, Some(M::Hold(0) | M::Idle | M::Alarm)) {
                                    return;
                                }
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                            _ => {}
                        },
                        _ = &mut poll => break,
                    }
                }
            }
        };
        let _ = tokio::time::timeout(wait, stopped).await;
        let _ = self.realtime(rt::SOFT_RESET);
    }

    /// Sets the status polling period (faster while picking).
    pub fn set_poll_period(&self, period: Duration) {
        let _ = self.cmds.send(Cmd::PollPeriod(period));
    }

    /// Sends one line; its reply within the response timeout.
    pub async fn send(&self, line: &str) -> Result<Answer, GrblError> {
        self.send_within(line, self.config.response_timeout).await
    }

    /// Sends one line and waits at most `timeout` for its reply (a sync
    /// point such as `G4 P0` is answered only when motion is done). On a
    /// timeout: feed hold, soft reset, and the error.
    pub async fn send_within(&self, line: &str, timeout: Duration) -> Result<Answer, GrblError> {
        check_line(line)?;
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let closed = || GrblError::Disconnected {
            path: self.config.path.clone(),
            why: "the port thread has stopped".into(),
        };
        self.cmds
            .send(Cmd::Line(id, line.to_string(), tx))
            .map_err(|_| closed())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(closed()),
            Err(_) => {
                self.stop_safely(STOP_WAIT).await;
                Err(GrblError::Timeout {
                    path: self.config.path.clone(),
                    line: line.into(),
                    timeout_ms: timeout.as_millis(),
                })
            }
        }
    }

    /// Soft reset, then the banner and an answered `$I`, all within
    /// `timeout`: the robust start whether or not the board printed a
    /// banner when the port opened. Returns the version.
    pub async fn soft_reset(&self, timeout: Duration) -> Result<String, GrblError> {
        let mut events = self.subscribe();
        self.cmds
            .send(Cmd::SoftReset)
            .map_err(|_| GrblError::Disconnected {
                path: self.config.path.clone(),
                why: "the port thread has stopped".into(),
            })?;
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(Event::Line(Reply::Banner { version })) => return Ok(version),
                    Ok(Event::Disconnected(why)) => {
                        return Err(GrblError::Disconnected {
                            path: self.config.path.clone(),
                            why,
                        })
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(GrblError::Disconnected {
                            path: self.config.path.clone(),
                            why: "the port thread has stopped".into(),
                        })
                    }
                }
            }
        };
        // A banner the board printed on its own (booting as the port
        // opened) can come just before the one this reset causes: a probe
        // line that the second banner cuts off is sent again.
        let sync = async {
            let version = wait.await?;
            loop {
                match self.send_within("$I", timeout).await {
                    Ok(_) => return Ok(version),
                    Err(GrblError::Reset { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        tokio::time::timeout(timeout, sync)
            .await
            .unwrap_or_else(|_| {
                Err(GrblError::NoBanner {
                    path: self.config.path.clone(),
                    timeout_ms: timeout.as_millis(),
                })
            })
    }

    /// `$$`: every setting, within the response timeout.
    pub async fn settings(&self) -> Result<HashMap<u16, f64>, GrblError> {
        let mut events = self.subscribe();
        match self.send("$$").await? {
            Answer::Ok => {}
            Answer::Error(c) => {
                return Err(GrblError::Io {
                    path: self.config.path.clone(),
                    why: format!("$$ gave error:{c} ({})", reply::error_text(c)),
                })
            }
        }
        // The settings lines came before the ok, so they are all queued.
        let mut out = HashMap::new();
        while let Ok(e) = events.try_recv() {
            if let Event::Line(Reply::Setting { number, value }) = e {
                out.insert(number, value);
            }
        }
        Ok(out)
    }

    /// Closes the port now (its thread stopped, both descriptors closed),
    /// though clones of the handle may live on: they get `Disconnected`.
    /// The exclusive lock goes with it, so the port can be opened again.
    pub fn close(&self) {
        self.worker.lock().unwrap_or_else(|e| e.into_inner()).stop();
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Drop for Grbl {
    fn drop(&mut self) {
        self.close();
    }
}
