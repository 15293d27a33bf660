//! The GRBL client against the project's GRBL emulator on a real PTY (and
//! against a silent PTY for the timeout): start-up by soft reset whether or
//! not a banner was printed, `$$`, streaming that never overflows the
//! 128-byte buffer, line noise, alarms, a closed port, and a bounded wait
//! for every line under a paused clock.

use cncpick::motion::grbl::client::{rt, Answer, ClientConfig, Event, Grbl, GrblError};
use cncpick::motion::grbl::reply::Reply;
use cncpick::sim::grbl::machine::Config;
use cncpick::sim::grbl::pty::PtyEmulator;
use cncpick::sim::grbl::settings::Settings;
use serialport::{SerialPort, TTYPort};
use std::io::Read;
use std::time::Duration;

fn fast_settings() -> Settings {
    let mut s = Settings::default();
    for a in 0..3u16 {
        s.set(110 + a, 30_000.0).unwrap();
        s.set(120 + a, 3_000.0).unwrap();
    }
    s
}

/// A board with homing enabled ($22=1) that homes in well under a second
/// from near its switches.
fn homing_board() -> PtyEmulator {
    let mut s = fast_settings();
    s.set(22, 1.0).unwrap();
    for (n, v) in [(24, 3000.0), (25, 30_000.0), (26, 0.0), (27, 0.5)] {
        s.set(n, v).unwrap();
    }
    PtyEmulator::start(Config::default(), s, 1.0).unwrap()
}

fn client(path: &str) -> Grbl {
    let mut c = ClientConfig::new(path);
    c.poll_period = Duration::from_millis(50);
    Grbl::open(c).unwrap()
}

async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("no such event within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_by_soft_reset_with_or_without_a_banner_on_open_then_settings() {
    let emu = PtyEmulator::start(Config::default(), fast_settings(), 1.0).unwrap();
    // The board booted (and printed its banner) before the port was opened,
    // as with a board that does not reset on DTR: the robust start needs no
    // banner on open.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let g = client(emu.path());
    let version = g.soft_reset(Duration::from_secs(2)).await.unwrap();
    assert_eq!(version, "1.1h");
    let settings = g.settings().await.unwrap();
    assert_eq!(settings.get(&110), Some(&30_000.0));
    assert_eq!(settings.get(&130), Some(&200.0));
    assert_eq!(settings.get(&22), Some(&0.0));
    // Homing disabled: $H is refused with error:5, and the board is Idle.
    assert_eq!(g.send("$H").await.unwrap(), Answer::Error(5));
    let mut events = g.subscribe();
    let Event::Line(Reply::Status(s)) =
        next_event(&mut events, |e| matches!(e, Event::Line(Reply::Status(_)))).await
    else {
        unreachable!()
    };
    assert_eq!(s.state.unwrap().label(), "Idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_hundreds_of_lines_never_overflows_the_buffer() {
    let emu = PtyEmulator::start(Config::default(), fast_settings(), 1.0).unwrap();
    let g = client(emu.path());
    g.soft_reset(Duration::from_secs(2)).await.unwrap();
    // Lines of many lengths; every fifth one a 1 mm move. Sent all at once:
    // the client keeps the bytes in flight within 128.
    let lines: Vec<String> = (0..300)
        .map(|k| match k % 5 {
            0 => format!(
                "G1 X-{:.3} Y-{:.3} F6000",
                (k % 50) as f64,
                (k % 7) as f64 * 0.5
            ),
            1 => "G90".into(),
            2 => "G21 G94 (millimetres, feed per minute)".into(),
            3 => "M9".into(),
            _ => format!("G4 P0.00{}", k % 10),
        })
        .collect();
    // All of it takes about 10 s, 2.7 s of which are the 54 dwells of
    // 1–9 ms: grbl dwells in whole 50 ms steps.
    let answers = futures::future::join_all(
        lines
            .iter()
            .map(|l| g.send_within(l, Duration::from_secs(30))),
    )
    .await;
    for (line, a) in lines.iter().zip(&answers) {
        assert_eq!(a, &Ok(Answer::Ok), "{line}");
    }
    // A sync point: answered when the motion is done, at the last target.
    assert_eq!(
        g.send_within("G4 P0", Duration::from_secs(10)).await,
        Ok(Answer::Ok)
    );
    let k = 295; // the last move
    let want = [-((k % 50) as f64), -((k % 7) as f64) * 0.5];
    let at = emu.snapshot().position_mm;
    assert!(
        (at[0] - want[0]).abs() < 1e-6 && (at[1] - want[1]).abs() < 1e-6,
        "{at:?} != {want:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_noise_is_reported_and_streaming_goes_on() {
    let emu = PtyEmulator::start(Config::default(), fast_settings(), 1.0).unwrap();
    let g = client(emu.path());
    g.soft_reset(Duration::from_secs(2)).await.unwrap();
    let mut events = g.subscribe();
    emu.write_garbage(b"\xff\xfe\x00zz9\r\nok\r\n<Idle|MPos:1,2>\r\n".to_vec());
    // Noise, a stray ok with nothing in flight, a broken report: all three
    // named, none taken as a reply or a position.
    let mut why = Vec::new();
    for _ in 0..3 {
        if let Event::Line(Reply::Garbage { why: w, .. }) = next_event(&mut events, |e| {
            matches!(e, Event::Line(Reply::Garbage { .. }))
        })
        .await
        {
            why.push(w);
        }
    }
    assert_eq!(
        why,
        [
            "not a GRBL line",
            "a reply with no line in flight",
            "MPos: 2 values, expected 3"
        ]
    );
    assert_eq!(g.send("G90").await, Ok(Answer::Ok));
    assert_eq!(g.send("G1 X1").await, Ok(Answer::Error(22)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_fails_the_lines_in_flight_and_a_closed_port_fails_the_rest() {
    let mut emu = PtyEmulator::start(Config::default(), Settings::default(), 1.0).unwrap();
    let g = client(emu.path());
    g.soft_reset(Duration::from_secs(2)).await.unwrap();
    let mut events = g.subscribe();
    // A long slow move, then a sync point whose ok waits for it; an alarm
    // arrives meanwhile.
    assert_eq!(g.send("G1 X-50 F500").await, Ok(Answer::Ok));
    let sync = g.send_within("G4 P0", Duration::from_secs(20));
    let alarm = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        emu.raise_alarm(1);
    };
    let (r, ()) = tokio::join!(sync, alarm);
    assert!(matches!(r, Err(GrblError::Alarm { code: 1, .. })), "{r:?}");
    assert!(r.unwrap_err().to_string().contains("hard limit"));
    assert_eq!(
        next_event(&mut events, |e| matches!(e, Event::Line(Reply::Alarm(_)))).await,
        Event::Line(Reply::Alarm(1))
    );
    // The board answers nothing now; the port closes under the client.
    let pending = g.send_within("G90", Duration::from_secs(20));
    let close = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        emu.stop();
    };
    let (r, ()) = tokio::join!(pending, close);
    assert!(matches!(r, Err(GrblError::Disconnected { .. })), "{r:?}");
    assert!(matches!(
        next_event(&mut events, |e| matches!(e, Event::Disconnected(_))).await,
        Event::Disconnected(_)
    ));
}

/// Nobody answers: the line's wait ends at grbl_command_response_s on a
/// paused clock, and the client writes feed hold then soft reset.
#[tokio::test(start_paused = true)]
async fn an_unanswered_line_times_out_with_feed_hold_and_reset() {
    let (mut master, slave) = TTYPort::pair().unwrap();
    let mut c = ClientConfig::new(&slave.name().unwrap());
    c.poll_period = Duration::ZERO;
    let g = Grbl::open(c).unwrap();
    let t0 = tokio::time::Instant::now();
    let r = g.send("G0 X-1").await;
    // The line's 2 s, then the safe stop's wait for a report that it has
    // stopped (none comes from a silent board) before the reset.
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(2) + cncpick::motion::grbl::client::STOP_WAIT
    );
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            GrblError::Timeout {
                timeout_ms: 2000,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("feed hold, then reset"));
    // What reached the wire: '!' then 0x18, and the line, if it went out
    // at all, before them (a line whose caller gave up is never sent later).
    master.set_timeout(Duration::from_millis(50)).unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline && !seen.contains(&rt::SOFT_RESET) {
        let mut buf = [0u8; 64];
        if let Ok(n) = master.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
    }
    let pos = |b: u8| seen.iter().position(|&x| x == b);
    let (hold, reset) = (pos(rt::FEED_HOLD).unwrap(), pos(rt::SOFT_RESET).unwrap());
    assert!(hold < reset, "{seen:?}");
    let line = seen.windows(7).position(|w| w == b"G0 X-1\n");
    assert!(line.is_none_or(|at| at < hold), "{seen:?}");
    // Nothing more is written afterwards: no stale line goes out.
    let mut buf = [0u8; 64];
    let more = master.read(&mut buf).unwrap_or(0);
    assert_eq!(&buf[..more], b"", "after the reset: {:?}", &buf[..more]);
    drop(slave);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_with_homing_enabled_boots_in_alarm_and_homes() {
    let emu = homing_board();
    let g = client(emu.path());
    let mut events = g.subscribe();
    assert_eq!(g.soft_reset(Duration::from_secs(2)).await.unwrap(), "1.1h");
    let is_alarm = |e: &Event| matches!(e, Event::Line(Reply::Status(s)) if s.state.map(|s| s.label()) == Some("Alarm".into()));
    next_event(&mut events, is_alarm).await;
    // Locked: G-code is refused until homed.
    assert_eq!(g.send("G0 X-1").await, Ok(Answer::Error(9)));
    assert_eq!(
        g.send_within("$H", Duration::from_secs(5)).await,
        Ok(Answer::Ok)
    );
    let is_idle = |e: &Event| matches!(e, Event::Line(Reply::Status(s)) if s.state.map(|s| s.label()) == Some("Idle".into()));
    next_event(&mut events, is_idle).await;
    assert_eq!(g.send("G0 X-1").await, Ok(Answer::Ok));
}

/// The controller's process dies in the middle of a move (SIGKILL closes
/// its port at once) and a new one opens the port: it must stop the board
/// without losing its position, so that no re-home is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_dies_mid_move_leaves_the_next_one_a_homed_board() {
    let emu = homing_board();
    let first = client(emu.path());
    first.soft_reset(Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        first.send_within("$H", Duration::from_secs(5)).await,
        Ok(Answer::Ok)
    );
    // Slow moves, so the board is mid-move when its host dies; the lines
    // are in its buffer and planner, and it goes on with them.
    for x in [-40, -80, -120] {
        assert_eq!(first.send(&format!("G1 X{x} F3000")).await, Ok(Answer::Ok));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(emu.snapshot().state.label(), "Run");
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = client(emu.path());
    // It stops the board as soon as a report says it is at rest (Hold:0),
    // and only then resets.
    let t0 = std::time::Instant::now();
    second
        .stop_safely(cncpick::motion::grbl::client::STOP_WAIT)
        .await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(700),
        "no report of the hold: {took:?}"
    );
    second.soft_reset(Duration::from_secs(2)).await.unwrap();
    let mut events = second.subscribe();
    let Event::Line(Reply::Status(s)) =
        next_event(&mut events, |e| matches!(e, Event::Line(Reply::Status(_)))).await
    else {
        unreachable!()
    };
    assert_eq!(
        s.state.unwrap().label(),
        "Idle",
        "the reset lost the position"
    );
}
