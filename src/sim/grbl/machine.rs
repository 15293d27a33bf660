//! GRBL 1.1h's behaviour as a serial peer, as a pure state machine: bytes in
//! with their time, bytes out, motion advanced to a time the caller gives.
//! The facts it reproduces are listed in ../shared/docs/grbl-protocol.md:
//! the 128-byte receive buffer that overflows silently, a 15-block planner,
//! `ok` meaning planned (not done), real-time bytes, status reports whose
//! fields come and go, alarms and the silence after a critical one, homing,
//! soft limits, feed hold, jogging, and coolant (the vacuum) as M8/M9.

use super::gcode::{self, err, Words};
use super::settings::Settings;
/// Rest-to-rest time of a move (the same profile the motion controller plans with).
pub use crate::kinematics::trapezoid_time_s;
use std::collections::VecDeque;
use std::time::Duration;

pub const BANNER: &str = "\r\nGrbl 1.1h ['$' for help]\r\n";

/// Timing and sizes of the emulated board.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Serial receive buffer, bytes.
    pub rx_buffer_bytes: usize,
    /// Planner blocks.
    pub planner_blocks: usize,
    /// Time for one byte on the wire (115200 baud: about 85 µs).
    pub byte_time: Duration,
    /// From `?` to its report; a second `?` meanwhile is ignored.
    pub status_latency: Duration,
    /// From 0x18 while idle to the banner.
    pub reset_banner_delay: Duration,
    /// From 0x18 during motion (ALARM:3) to the banner.
    pub reset_in_motion_delay: Duration,
    /// After an unsolicited ALARM the firmware stalls this long.
    pub alarm_stall: Duration,
    /// WCO: is included in every n-th status report.
    pub wco_every: u32,
    /// Ov: is included in every n-th status report.
    pub ov_every: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rx_buffer_bytes: 128,
            planner_blocks: 15,
            byte_time: Duration::from_micros(85),
            status_latency: Duration::from_millis(4),
            reset_banner_delay: Duration::from_millis(35),
            reset_in_motion_delay: Duration::from_millis(600),
            alarm_stall: Duration::from_millis(500),
            wco_every: 10,
            ov_every: 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Run,
    /// Hold:0 complete, Hold:1 decelerating.
    Hold(u8),
    Jog,
    Alarm,
    Home,
    Check,
}

impl State {
    pub fn label(self) -> String {
        match self {
            State::Idle => "Idle".into(),
            State::Run => "Run".into(),
            State::Hold(n) => format!("Hold:{n}"),
            State::Jog => "Jog".into(),
            State::Alarm => "Alarm".into(),
            State::Home => "Home".into(),
            State::Check => "Check".into(),
        }
    }
}

/// One straight move, rest to rest, on a trapezoid (or triangle) profile.
#[derive(Debug, Clone, PartialEq)]
struct Move {
    from: [f64; 3],
    to: [f64; 3],
    /// Cruise speed, mm/s.
    v: f64,
    /// Acceleration along the move, mm/s².
    a: f64,
    jog: bool,
    /// When it started executing; None while queued.
    started: Option<Duration>,
}

impl Move {
    fn length(&self) -> f64 {
        dist(&self.from, &self.to)
    }

    /// Total time of the profile, s.
    fn duration_s(&self) -> f64 {
        trapezoid_time_s(self.length(), self.v, self.a)
    }

    /// Distance covered and speed `t` seconds after the start.
    fn progress(&self, t: f64) -> (f64, f64) {
        let d = self.length();
        let (v, a) = (self.v, self.a);
        if d <= 0.0 || v <= 0.0 || a <= 0.0 {
            return (d, 0.0);
        }
        let (t_acc, v_peak) = if d < v * v / a {
            ((d / a).sqrt(), (d * a).sqrt())
        } else {
            (v / a, v)
        };
        let d_acc = 0.5 * a * t_acc * t_acc;
        let t_cruise = (d - 2.0 * d_acc).max(0.0) / v_peak;
        let total = 2.0 * t_acc + t_cruise;
        if t <= 0.0 {
            (0.0, 0.0)
        } else if t < t_acc {
            (0.5 * a * t * t, a * t)
        } else if t < t_acc + t_cruise {
            (d_acc + v_peak * (t - t_acc), v_peak)
        } else if t < total {
            let r = total - t;
            (d - 0.5 * a * r * r, a * r)
        } else {
            (d, 0.0)
        }
    }

    fn point_at(&self, s: f64) -> [f64; 3] {
        let d = self.length();
        if d <= 0.0 {
            return self.to;
        }
        let f = (s / d).clamp(0.0, 1.0);
        [0, 1, 2].map(|i| self.from[i] + (self.to[i] - self.from[i]) * f)
    }
}

fn dist(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    (0..3).map(|i| (b[i] - a[i]).powi(2)).sum::<f64>().sqrt()
}

/// A planner block.
#[derive(Debug, Clone, PartialEq)]
enum Block {
    Move(Move),
}

/// grbl 1.1 dwells in steps of `DWELL_TIME_STEP` (config.h: 50 ms), and
/// only between steps does it serve realtime commands such as `?`.
pub const DWELL_STEP: Duration = Duration::from_millis(50);

/// How long grbl 1.1 dwells for `G4 P<seconds>`: nuts_bolts.c's
/// `delay_sec` runs `ceil(1000/DWELL_TIME_STEP*seconds)` whole steps, in
/// the AVR's 32-bit float (so `P0.001` dwells 50 ms, `P0.06` 100 ms and
/// `P0` not at all).
pub fn dwell_time(seconds: f64) -> Duration {
    let steps = (20.0f32 * seconds as f32).ceil().max(0.0);
    DWELL_STEP * steps as u32
}

/// A command that waits for the planner to empty before it runs and is
/// answered (G4, and coolant or spindle changes, as in grbl).
#[derive(Debug, Clone, PartialEq)]
enum Sync {
    Dwell {
        seconds: f64,
        /// When the dwell began (the planner empty).
        from: Option<Duration>,
    },
    Coolant(bool),
    Spindle(bool),
}

/// The emulator.
#[derive(Debug, Clone)]
pub struct Machine {
    pub config: Config,
    pub settings: Settings,
    state: State,
    /// Bytes on the wire, with the time each one arrives.
    wire: VecDeque<(Duration, u8)>,
    wire_free_at: Duration,
    rx: VecDeque<u8>,
    planner: VecDeque<Block>,
    sync: Option<Sync>,
    out: Vec<u8>,
    /// Where grbl thinks it is (MPos), mm.
    pos: [f64; 3],
    /// Where the machine really is, less `pos`: what grbl lost at its
    /// last power-on (it starts counting from 0 wherever the gantry
    /// stands); homing makes it 0.
    offset: [f64; 3],
    /// Work coordinate offsets G54..G59, machine = work + wco.
    wco: [[f64; 3]; 6],
    coord: usize,
    g92: [f64; 3],
    absolute: bool,
    inches: bool,
    motion_g: u16,
    feed_mm_min: Option<f64>,
    coolant: bool,
    spindle: bool,
    /// The probe input (the project wires the vacuum sensor to it).
    probe: bool,
    /// Fault injection: the next line is refused with this error code.
    fail_next: Option<u8>,
    /// After ALARM:1/2: nothing is answered until 0x18.
    silent: bool,
    /// Stalled (no processing) until then.
    stall_until: Duration,
    /// A reset in progress: the banner goes out then.
    banner_at: Option<(Duration, bool)>,
    homing_until: Option<Duration>,
    /// When the pending status report goes out.
    status_due: Option<Duration>,
    reports: u32,
    hold_resume_state: State,
    /// Bytes dropped because the receive buffer was full.
    pub dropped_bytes: u64,
    now: Duration,
}

impl Machine {
    /// A board that has just been powered on at `now`: it prints its banner,
    /// and boots into Alarm when homing is enabled.
    pub fn new(config: Config, settings: Settings, now: Duration) -> Self {
        let mut m = Machine {
            config,
            settings,
            state: State::Idle,
            wire: VecDeque::new(),
            wire_free_at: now,
            rx: VecDeque::new(),
            planner: VecDeque::new(),
            sync: None,
            out: Vec::new(),
            pos: [0.0; 3],
            offset: [0.0; 3],
            wco: [[0.0; 3]; 6],
            coord: 0,
            g92: [0.0; 3],
            absolute: true,
            inches: false,
            motion_g: 0,
            feed_mm_min: None,
            coolant: false,
            spindle: false,
            probe: false,
            fail_next: None,
            silent: false,
            stall_until: now,
            banner_at: None,
            homing_until: None,
            status_due: None,
            reports: 0,
            hold_resume_state: State::Idle,
            dropped_bytes: 0,
            now,
        };
        let homing = m.settings.flag(22);
        m.boot(homing);
        m
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Where the machine really is, mm (machine frame): what grbl reports
    /// as MPos, plus what it lost at power-on until it has homed.
    pub fn position(&self) -> [f64; 3] {
        [0, 1, 2].map(|a| self.pos[a] + self.offset[a])
    }

    /// A board powered on with its gantry at `physical_mm` (machine
    /// frame): grbl counts from 0 there, so its position is lost until
    /// homing finds the switches.
    pub fn powered_on_at(mut self, physical_mm: [f64; 3]) -> Self {
        self.offset = [0, 1, 2].map(|a| physical_mm[a] - self.pos[a]);
        self
    }

    /// How long `$H` takes from where the machine really is: grbl 1.1's
    /// cycle homes Z, then X and Y together; each cycle seeks the
    /// switches at `$25` (from the axis furthest from its switch), pulls
    /// off `$27` at `$25`, finds the switch again at `$24`, pulls off
    /// again, and waits `$26` ms for the switches to settle after each
    /// of those four moves. Each move from rest to rest at the axes'
    /// acceleration.
    pub fn homing_duration(&self) -> Duration {
        let s = &self.settings;
        let at = self.position();
        let (feed, seek) = (s.get(24) / 60.0, s.get(25) / 60.0);
        let (debounce_s, pulloff) = (s.get(26) / 1000.0, s.get(27));
        let cycle = |axes: &[usize]| {
            let d = axes.iter().map(|&a| at[a].abs()).fold(0.0, f64::max);
            let accel = axes
                .iter()
                .map(|&a| s.get(120 + a as u16))
                .fold(f64::INFINITY, f64::min);
            trapezoid_time_s(d, seek, accel)
                + 2.0 * trapezoid_time_s(pulloff, seek, accel)
                + trapezoid_time_s(pulloff, feed, accel)
                + 4.0 * debounce_s
        };
        Duration::from_secs_f64(cycle(&[2]) + cycle(&[0, 1]))
    }

    /// The vacuum: coolant (M8/M7) or spindle (M3/M4) on.
    pub fn vacuum_on(&self) -> bool {
        self.coolant || self.spindle
    }

    /// Everything written since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    fn say(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// The banner, after a power-on or a reset. Grbl locks itself in Alarm
    /// at power-on when homing is enabled (its position is unknown); after a
    /// soft reset it keeps its prior state (main.c: the `HOMING_INIT_LOCK`
    /// check runs once, before the reset loop), so a reset while at rest
    /// keeps a homed board's position and leaves it unlocked.
    fn boot(&mut self, alarm: bool) {
        self.out.extend_from_slice(BANNER.as_bytes());
        if alarm {
            self.state = State::Alarm;
            self.say("[MSG:'$H'|'$X' to unlock]");
        } else {
            self.state = State::Idle;
        }
    }

    /// Bytes written by the host at `now`. They arrive paced by the baud
    /// rate; each is handled when `advance` reaches its arrival time.
    pub fn receive(&mut self, now: Duration, bytes: &[u8]) {
        let mut t = self.wire_free_at.max(now);
        for &b in bytes {
            t += self.config.byte_time;
            self.wire.push_back((t, b));
        }
        self.wire_free_at = t;
    }

    /// Sets the probe input: reported as `Pn:P` while active (the cell's
    /// vacuum sensor: something is held on the nozzle).
    pub fn set_probe(&mut self, active: bool) {
        self.probe = active;
    }

    /// Fault injection: the next line is answered `error:code` and not
    /// executed (the lines after it still are, as grbl does).
    pub fn fail_next_line(&mut self, code: u8) {
        self.fail_next = Some(code);
    }

    /// Raises an unsolicited alarm (fault injection: 1 hard limit, 2 soft
    /// limit, ...). ALARM:1 and 2 silence the board until a soft reset.
    pub fn raise_alarm(&mut self, now: Duration, code: u8) {
        self.advance(now);
        self.planner.clear();
        self.sync = None;
        self.state = State::Alarm;
        self.say(&format!("ALARM:{code}"));
        if code == 1 || code == 2 {
            self.say("[MSG:Reset to continue]");
            self.silent = true;
        }
        self.stall_until = now + self.config.alarm_stall;
    }

    /// Runs the board up to `now`.
    pub fn advance(&mut self, now: Duration) {
        // Bytes and motion are interleaved in time order, byte by byte.
        while let Some(&(t, b)) = self.wire.front() {
            if t > now {
                break;
            }
            self.run_until(t);
            self.wire.pop_front();
            self.on_byte(t, b);
            self.process_lines(t);
        }
        self.run_until(now);
        self.process_lines(now);
        self.now = self.now.max(now);
    }

    fn on_byte(&mut self, t: Duration, b: u8) {
        match b {
            0x18 => self.soft_reset(t),
            _ if self.silent || self.banner_at.is_some() => {}
            b'?' => {
                let served_at = self.dwell_step_at(t);
                self.status_due
                    .get_or_insert(served_at + self.config.status_latency);
            }
            b'!' => self.feed_hold(t),
            b'~' => self.cycle_start(t),
            0x85 => self.jog_cancel(),
            0x84 | 0x90..=0xA1 => {}
            _ => {
                if self.rx.len() < self.config.rx_buffer_bytes {
                    self.rx.push_back(b);
                } else {
                    self.dropped_bytes += 1;
                }
            }
        }
    }

    /// When grbl next serves realtime commands after `t`: at once, but
    /// during a dwell only at the start of its next step (or its end).
    fn dwell_step_at(&self, t: Duration) -> Duration {
        match self.sync {
            Some(Sync::Dwell {
                seconds,
                from: Some(from),
            }) if t > from => {
                let end = from + dwell_time(seconds);
                let steps = ((t - from).as_nanos()).div_ceil(DWELL_STEP.as_nanos());
                (from + DWELL_STEP * steps as u32).min(end).max(t)
            }
            _ => t,
        }
    }

    fn soft_reset(&mut self, t: Duration) {
        let moving = matches!(
            self.state,
            State::Run | State::Jog | State::Hold(1) | State::Home
        );
        let critical = self.silent;
        self.rx.clear();
        self.wire.retain(|(at, _)| *at <= t);
        self.planner.clear();
        self.sync = None;
        self.homing_until = None;
        self.status_due = None;
        self.silent = false;
        self.coolant = false;
        self.spindle = false;
        if moving {
            self.state = State::Alarm;
            self.say("ALARM:3");
            self.banner_at = Some((t + self.config.reset_in_motion_delay, true));
        } else {
            // A reset keeps the alarm lock (grbl keeps its prior state):
            // only $H or $X clears it.
            let stay = critical || self.state == State::Alarm;
            self.banner_at = Some((t + self.config.reset_banner_delay, stay));
        }
    }

    fn feed_hold(&mut self, t: Duration) {
        match self.state {
            State::Jog => self.jog_cancel(),
            State::Run => {
                self.hold_resume_state = State::Run;
                self.stop_motion(t);
                self.state = State::Hold(1);
            }
            State::Idle if !self.planner.is_empty() => self.state = State::Hold(0),
            _ => {}
        }
    }

    /// Replaces the moving block by a decelerating stretch from where it is
    /// now (at its current speed, stopping at its acceleration) followed by
    /// the rest of the move, queued for the resume.
    fn stop_motion(&mut self, t: Duration) {
        let Some(Block::Move(m)) = self.planner.front_mut() else {
            return;
        };
        let Some(start) = m.started else { return };
        let (s, v) = m.progress(t.saturating_sub(start).as_secs_f64());
        let stop = (s + v * v / (2.0 * m.a)).min(m.length());
        let remaining = Move {
            from: m.point_at(stop),
            started: None,
            ..m.clone()
        };
        *m = Move {
            from: m.point_at(s),
            to: m.point_at(stop),
            v: v.max(1e-9),
            a: m.a,
            jog: m.jog,
            started: Some(t),
        };
        self.planner.insert(1, Block::Move(remaining));
    }

    fn cycle_start(&mut self, t: Duration) {
        if let State::Hold(_) = self.state {
            self.state = if self.planner.is_empty() {
                State::Idle
            } else {
                self.hold_resume_state
            };
            if let Some(Block::Move(m)) = self.planner.front_mut() {
                if m.started.is_none() {
                    m.started = Some(t);
                }
            }
        }
    }

    fn jog_cancel(&mut self) {
        if self.state == State::Jog {
            if let Some(Block::Move(m)) = self.planner.front() {
                let t = self.now;
                if let Some(start) = m.started {
                    let (s, _) = m.progress(t.saturating_sub(start).as_secs_f64());
                    self.pos = m.point_at(s);
                }
            }
            self.planner.retain(|Block::Move(m)| !m.jog);
            self.state = State::Idle;
        }
    }

    /// Until when the board, as last advanced, changes nothing unless
    /// something arrives (bytes from the host, an injected fault): the
    /// next byte's arrival on the wire, the end of a reset, a homing cycle,
    /// a dwell or a stall, a status report falling due. `None`: nothing is
    /// pending. While the gantry moves (or a command waits on the planner)
    /// it is the last advance: the position changes continuously.
    pub fn quiet_until(&self) -> Option<Duration> {
        let now = self.now;
        if !self.planner.is_empty()
            || matches!(self.sync, Some(Sync::Coolant(_) | Sync::Spindle(_)))
        {
            return Some(now);
        }
        let dwell = match self.sync {
            Some(Sync::Dwell { seconds, from }) => {
                Some(from.map_or(now, |f| f + dwell_time(seconds)))
            }
            _ => None,
        };
        let stalled =
            (self.stall_until > now && self.rx.contains(&b'\n')).then_some(self.stall_until);
        [
            self.wire.front().map(|&(t, _)| t),
            self.banner_at.map(|(t, _)| t),
            self.homing_until,
            self.status_due,
            dwell,
            stalled,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Executes motion, dwells, homing and pending resets up to `t`.
    fn run_until(&mut self, t: Duration) {
        if let Some((at, stay)) = self.banner_at {
            if t >= at {
                self.banner_at = None;
                self.boot(stay);
            } else {
                return;
            }
        }
        if let Some(until) = self.homing_until {
            if t >= until {
                self.homing_until = None;
                self.pos = [0.0; 3];
                self.offset = [0.0; 3];
                self.state = State::Idle;
                self.say("ok");
            }
            return;
        }
        if matches!(self.state, State::Hold(_)) {
            // Finish decelerating to the stopping point, then hold.
            if let Some(Block::Move(m)) = self.planner.front() {
                if let Some(start) = m.started {
                    let el = t.saturating_sub(start).as_secs_f64();
                    let decel_s = if m.a > 0.0 { m.v / m.a } else { 0.0 };
                    let s = (m.v * el - 0.5 * m.a * el * el).clamp(0.0, m.length());
                    self.pos = m.point_at(if el >= decel_s { m.length() } else { s });
                    if el >= decel_s {
                        self.pos = m.to;
                        self.planner.pop_front();
                        self.state = State::Hold(0);
                    }
                }
            }
            // Grbl reports during a hold (Hold:1, then Hold:0): a host
            // waits for Hold:0 to know the machine is at rest.
            self.report_if_due(t);
            return;
        }
        while let Some(Block::Move(m)) = self.planner.front_mut() {
            let start = *m.started.get_or_insert(t);
            let dur = Duration::from_secs_f64(m.duration_s());
            if t >= start + dur {
                self.pos = m.to;
                let end = start + dur;
                self.planner.pop_front();
                if let Some(Block::Move(next)) = self.planner.front_mut() {
                    next.started = Some(end);
                }
                continue;
            }
            let (s, _) = m.progress(t.saturating_sub(start).as_secs_f64());
            self.pos = m.point_at(s);
            self.state = if m.jog { State::Jog } else { State::Run };
            break;
        }
        if self.planner.is_empty() && matches!(self.state, State::Run | State::Jog) {
            self.state = State::Idle;
        }
        // A command waiting for the planner to empty.
        if self.planner.is_empty() {
            match self.sync.take() {
                Some(Sync::Dwell { seconds, from }) => {
                    let from = from.unwrap_or(t);
                    if t < from + dwell_time(seconds) {
                        self.sync = Some(Sync::Dwell {
                            seconds,
                            from: Some(from),
                        });
                    } else {
                        self.say("ok");
                    }
                }
                Some(Sync::Coolant(on)) => {
                    self.coolant = on;
                    self.say("ok");
                }
                Some(Sync::Spindle(on)) => {
                    self.spindle = on;
                    self.say("ok");
                }
                None => {}
            }
        }
        self.report_if_due(t);
    }

    /// The status report asked for with `?`, once its latency has passed
    /// (none during homing).
    fn report_if_due(&mut self, t: Duration) {
        if self.status_due.is_some_and(|due| t >= due) {
            self.status_due = None;
            if self.homing_until.is_none() {
                let report = self.status_report();
                self.say(&report);
            }
        }
    }

    /// Takes complete lines from the receive buffer while the planner has room.
    fn process_lines(&mut self, t: Duration) {
        if self.silent || t < self.stall_until || self.banner_at.is_some() {
            return;
        }
        loop {
            if self.sync.is_some()
                || self.homing_until.is_some()
                || matches!(self.state, State::Hold(_))
                || self.planner.len() >= self.config.planner_blocks
            {
                return;
            }
            let Some(nl) = self.rx.iter().position(|&b| b == b'\n') else {
                return;
            };
            let raw: Vec<u8> = self.rx.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&raw);
            let line = gcode::significant(text.trim_end_matches(['\r', '\n']));
            if let Some(code) = self.fail_next.take() {
                // Fault injection: this line is refused as if malformed.
                self.say(&format!("error:{code}"));
                continue;
            }
            match self.execute(&line, t) {
                Ok(Some(())) => self.say("ok"),
                Ok(None) => {} // answered later (sync, homing) or already answered
                Err(code) => self.say(&format!("error:{code}")),
            }
            if self.silent {
                return;
            }
        }
    }

    /// Executes one significant line. Ok(Some) is answered `ok` now.
    fn execute(&mut self, line: &str, t: Duration) -> Result<Option<()>, u8> {
        if line.is_empty() {
            return Ok(Some(()));
        }
        if let Some(rest) = line.strip_prefix('$') {
            return self.system_command(rest, t);
        }
        if line.len() > gcode::MAX_LINE {
            return Err(err::OVERFLOW);
        }
        if self.state == State::Alarm {
            return Err(err::SYSTEM_GC_LOCK);
        }
        let words = gcode::parse(line)?;
        self.gcode(&words, false)
    }

    fn system_command(&mut self, rest: &str, t: Duration) -> Result<Option<()>, u8> {
        match rest {
            "$" => {
                for l in self.settings.listing() {
                    self.say(&l);
                }
                Ok(Some(()))
            }
            "I" => {
                self.say("[VER:1.1h.20190830:]");
                let opt = format!(
                    "[OPT:V,{},{}]",
                    self.config.planner_blocks, self.config.rx_buffer_bytes
                );
                self.say(&opt);
                Ok(Some(()))
            }
            "G" => {
                let gc = format!(
                    "[GC:G{} G{} G17 G{} G{} G94 M{} M{} T0 F{} S0]",
                    self.motion_g / 10,
                    54 + self.coord,
                    if self.inches { 20 } else { 21 },
                    if self.absolute { 90 } else { 91 },
                    if self.spindle { 3 } else { 5 },
                    if self.coolant { 8 } else { 9 },
                    self.feed_mm_min.unwrap_or(0.0)
                );
                self.say(&gc);
                Ok(Some(()))
            }
            "#" => {
                let fmt = |v: [f64; 3]| format!("{:.3},{:.3},{:.3}", v[0], v[1], v[2]);
                let mut lines: Vec<String> = (0..6)
                    .map(|k| format!("[G{}:{}]", 54 + k, fmt(self.wco[k])))
                    .collect();
                lines.push(format!("[G28:{}]", fmt([0.0; 3])));
                lines.push(format!("[G30:{}]", fmt([0.0; 3])));
                lines.push(format!("[G92:{}]", fmt(self.g92)));
                lines.push("[TLO:0.000]".into());
                lines.push(format!("[PRB:{}:0]", fmt([0.0; 3])));
                for l in lines {
                    self.say(&l);
                }
                Ok(Some(()))
            }
            "X" => {
                if self.state == State::Alarm {
                    self.say("[MSG:Caution: Unlocked]");
                    self.state = State::Idle;
                }
                Ok(Some(()))
            }
            "H" => {
                if !self.settings.flag(22) {
                    return Err(err::HOMING_DISABLED);
                }
                if !matches!(self.state, State::Idle | State::Alarm) {
                    return Err(err::IDLE_ERROR);
                }
                self.state = State::Home;
                self.homing_until = Some(t + self.homing_duration());
                Ok(None)
            }
            "C" => {
                if self.state == State::Check {
                    self.state = State::Idle;
                    self.say("[MSG:Disabled]");
                } else if self.state == State::Idle {
                    self.state = State::Check;
                    self.say("[MSG:Enabled]");
                } else {
                    return Err(err::IDLE_ERROR);
                }
                Ok(Some(()))
            }
            _ if rest.starts_with("J=") => {
                if !matches!(self.state, State::Idle | State::Jog) {
                    return Err(err::IDLE_ERROR);
                }
                let words = gcode::parse(&rest[2..])?;
                self.gcode(&words, true)
            }
            _ => {
                let (n, v) = rest.split_once('=').ok_or(err::INVALID_STATEMENT)?;
                let n: u16 = n.parse().map_err(|_| err::INVALID_STATEMENT)?;
                let v: f64 = v.parse().map_err(|_| err::BAD_NUMBER_FORMAT)?;
                if v < 0.0 {
                    return Err(err::NEGATIVE_VALUE);
                }
                if self.state != State::Idle && self.state != State::Alarm {
                    return Err(err::IDLE_ERROR);
                }
                self.settings.set(n, v).ok_or(err::INVALID_STATEMENT)?;
                Ok(Some(()))
            }
        }
    }

    /// Work position -> machine position for the current coordinate system.
    fn to_machine(&self, axis: usize, v: f64) -> f64 {
        self.wco[self.coord][axis] + self.g92[axis] + v
    }

    fn gcode(&mut self, w: &Words, jog: bool) -> Result<Option<()>, u8> {
        let scale = if w.g.contains(&200) || (self.inches && !w.g.contains(&210)) {
            25.4
        } else {
            1.0
        };
        if w.g.contains(&431) && (w.get('X').is_some() || w.get('Y').is_some()) {
            return Err(err::AXIS_COMMAND_CONFLICT);
        }
        if jog {
            // Jogs take only G20/21, G90/91, G53, axis words and F.
            if w.g.iter().any(|g| ![200, 210, 900, 910, 530].contains(g)) || !w.m.is_empty() {
                return Err(err::INVALID_STATEMENT);
            }
            if w.get('F').is_none() {
                return Err(err::UNDEFINED_FEED_RATE);
            }
        }
        let mut absolute = self.absolute;
        for g in &w.g {
            match g {
                900 => absolute = true,
                910 => absolute = false,
                _ => {}
            }
        }
        // Modal changes that are not motion.
        if !jog {
            self.absolute = absolute;
            for g in &w.g {
                match g {
                    200 => self.inches = true,
                    210 => self.inches = false,
                    540..=590 => self.coord = ((g - 540) / 10) as usize,
                    _ => {}
                }
            }
            if let Some(f) = w.get('F') {
                self.feed_mm_min = Some(f * scale);
            }
        }
        let g53 = w.g.contains(&530);
        // G10 L2/L20: set a coordinate system's offset.
        if w.g.contains(&100) {
            let p = w.get('P').unwrap_or(1.0).round() as usize;
            let idx = if p == 0 { self.coord } else { p - 1 };
            if idx >= 6 {
                return Err(err::UNSUPPORTED_COMMAND);
            }
            match w.get('L').map(|l| l.round() as u8) {
                Some(2) => {
                    for (a, v) in w.axes().iter().enumerate() {
                        if let Some(v) = v {
                            self.wco[idx][a] = v * scale;
                        }
                    }
                }
                Some(20) => {
                    for (a, v) in w.axes().iter().enumerate() {
                        if let Some(v) = v {
                            self.wco[idx][a] = self.pos[a] - self.g92[a] - v * scale;
                        }
                    }
                }
                _ => return Err(err::UNSUPPORTED_COMMAND),
            }
            return Ok(Some(()));
        }
        if w.g.contains(&920) {
            for (a, v) in w.axes().iter().enumerate() {
                if let Some(v) = v {
                    self.g92[a] = self.pos[a] - self.wco[self.coord][a] - v * scale;
                }
            }
            return Ok(Some(()));
        }
        if w.g.contains(&40) {
            let p = w.get('P').unwrap_or(0.0);
            self.sync = Some(Sync::Dwell {
                seconds: p,
                from: None,
            });
            return Ok(None);
        }
        if w.g
            .iter()
            .any(|g| [382, 383, 384, 385, 280, 281, 300, 301].contains(g))
        {
            // Probing and predefined positions: not in this emulator.
            return Err(err::UNSUPPORTED_COMMAND);
        }
        let motion = if jog {
            Some(10)
        } else {
            w.g.iter()
                .copied()
                .find(|g| [0, 10, 20, 30, 800].contains(g))
        };
        if let Some(m) = motion {
            if !jog {
                self.motion_g = m;
            }
        }
        let mode = motion.unwrap_or(self.motion_g);
        // Spindle and coolant wait for the planner, as grbl's *_sync do.
        for m in &w.m {
            match m {
                30 | 40 => self.sync = Some(Sync::Spindle(true)),
                50 => self.sync = Some(Sync::Spindle(false)),
                80 => self.sync = Some(Sync::Coolant(true)),
                90 => self.sync = Some(Sync::Coolant(false)),
                70 => return Err(err::UNSUPPORTED_COMMAND),
                _ => {}
            }
        }
        if !w.has_axis() || mode == 800 {
            if matches!(mode, 20 | 30) && motion.is_some() {
                return Err(err::NO_AXIS_WORDS);
            }
            return Ok(if self.sync.is_some() { None } else { Some(()) });
        }
        let mut target = self.pos;
        for (a, v) in w.axes().iter().enumerate() {
            if let Some(v) = v {
                let v = v * scale;
                target[a] = if g53 {
                    v
                } else if absolute {
                    self.to_machine(a, v)
                } else {
                    // Relative to where the queued moves will have taken us.
                    self.planned_end()[a] + v
                };
            } else {
                target[a] = self.planned_end()[a];
            }
        }
        let feed = if jog {
            w.get('F').map(|f| f * scale)
        } else {
            self.feed_mm_min
        };
        let rate_mm_min = match mode {
            0 => f64::INFINITY,
            10 | 20 | 30 => {
                if matches!(mode, 20 | 30)
                    && w.get('R').is_none()
                    && w.get('I').is_none()
                    && w.get('J').is_none()
                    && w.get('K').is_none()
                {
                    return Err(err::NO_OFFSETS_IN_PLANE);
                }
                feed.ok_or(err::UNDEFINED_FEED_RATE)?
            }
            _ => return Err(err::UNSUPPORTED_COMMAND),
        };
        if self.settings.flag(20) && !self.within_travel(&target) {
            if jog {
                return Err(err::TRAVEL_EXCEEDED);
            }
            // A soft limit on a program move is a critical alarm.
            self.planner.clear();
            self.sync = None;
            self.state = State::Alarm;
            self.say("ALARM:2");
            self.say("[MSG:Reset to continue]");
            self.silent = true;
            return Ok(None);
        }
        if self.state == State::Check {
            return Ok(Some(()));
        }
        let from = self.planned_end();
        let mv = self.make_move(from, target, rate_mm_min, jog);
        if mv.length() > 0.0 {
            self.planner.push_back(Block::Move(mv));
        }
        Ok(if self.sync.is_some() { None } else { Some(()) })
    }

    fn planned_end(&self) -> [f64; 3] {
        match self.planner.back() {
            Some(Block::Move(m)) => m.to,
            None => self.pos,
        }
    }

    /// grbl's soft limits: machine space is [-max_travel, 0] on each axis.
    fn within_travel(&self, p: &[f64; 3]) -> bool {
        (0..3).all(|a| p[a] <= 1e-9 && p[a] >= -self.settings.travel_mm(a) - 1e-9)
    }

    fn make_move(&self, from: [f64; 3], to: [f64; 3], rate_mm_min: f64, jog: bool) -> Move {
        let d = dist(&from, &to);
        let mut v = rate_mm_min / 60.0;
        let mut a = f64::INFINITY;
        for axis in 0..3 {
            let u = if d > 0.0 {
                (to[axis] - from[axis]).abs() / d
            } else {
                0.0
            };
            if u > 1e-12 {
                v = v.min(self.settings.max_rate_mm_min(axis) / 60.0 / u);
                a = a.min(self.settings.accel_mm_s2(axis) / u);
            }
        }
        Move {
            from,
            to,
            v,
            a: if a.is_finite() { a } else { 1.0 },
            jog,
            started: None,
        }
    }

    /// The current velocity, mm/min.
    fn feed_now(&self) -> f64 {
        match self.planner.front() {
            Some(Block::Move(m)) if matches!(self.state, State::Run | State::Jog) => m
                .started
                .map(|s| m.progress(self.now.saturating_sub(s).as_secs_f64()).1 * 60.0)
                .unwrap_or(0.0),
            _ => 0.0,
        }
    }

    fn status_report(&mut self) -> String {
        self.reports += 1;
        let mask = self.settings.get(10) as u32;
        let wco: [f64; 3] = [0, 1, 2].map(|a| self.wco[self.coord][a] + self.g92[a]);
        let (label, p) = if mask & 1 == 1 {
            ("MPos", self.pos)
        } else {
            ("WPos", [0, 1, 2].map(|a| self.pos[a] - wco[a]))
        };
        // grbl never prints -0.000.
        let p = p.map(|v| if v.abs() < 0.0005 { 0.0 } else { v });
        let mut s = format!(
            "<{}|{label}:{:.3},{:.3},{:.3}",
            self.state.label(),
            p[0],
            p[1],
            p[2]
        );
        if mask & 2 == 2 {
            let free_blocks = self.config.planner_blocks - self.planner.len();
            let free_rx = self.config.rx_buffer_bytes - self.rx.len();
            s += &format!("|Bf:{free_blocks},{free_rx}");
        }
        s += &format!("|FS:{:.0},0", self.feed_now());
        let every = |n: u32| n > 0 && (self.reports - 1).is_multiple_of(n);
        if every(self.config.wco_every) {
            s += &format!("|WCO:{:.3},{:.3},{:.3}", wco[0], wco[1], wco[2]);
        } else if every(self.config.ov_every) {
            s += "|Ov:100,100,100";
        }
        match (self.spindle, self.coolant) {
            (true, true) => s += "|A:SF",
            (true, false) => s += "|A:S",
            (false, true) => s += "|A:F",
            _ => {}
        }
        if self.probe {
            s += "|Pn:P";
        }
        s.push('>');
        s
    }
}
