//! The GRBL 1.1h emulator against the facts in ../shared/docs/grbl-protocol.md:
//! one test per row of its error table, the alarm behaviours, streaming and
//! overflow, status reports, and the trapezoid timing. Time is simulated.

use cncpick::sim::grbl::machine::{Config, Machine, State, BANNER};
use cncpick::sim::grbl::settings::Settings;
use std::time::Duration;

struct Bench {
    m: Machine,
    now: Duration,
    out: String,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Bench {
    fn new(settings: Settings) -> Bench {
        let mut b = Bench {
            m: Machine::new(Config::default(), settings, Duration::ZERO),
            now: Duration::ZERO,
            out: String::new(),
        };
        b.collect();
        b
    }

    fn idle() -> Bench {
        Bench::new(Settings::default())
    }

    /// Homing and soft limits on, homed, idle at the machine origin.
    fn homed() -> Bench {
        let mut s = Settings::default();
        s.set(22, 1.0).unwrap();
        s.set(20, 1.0).unwrap();
        let mut b = Bench::new(s);
        b.cmd("$H");
        b.run(ms(13_000));
        b.take();
        b
    }

    fn collect(&mut self) {
        self.out += &String::from_utf8_lossy(&self.m.take_output());
    }

    fn send(&mut self, bytes: &[u8]) {
        self.m.receive(self.now, bytes);
    }

    /// Sends a line and gives the board 50 ms.
    fn cmd(&mut self, line: &str) -> String {
        self.take();
        self.send(format!("{line}\n").as_bytes());
        self.run(ms(50));
        self.take()
    }

    /// Advances simulated time in 1 ms steps.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += ms(1);
            self.m.advance(self.now);
            self.collect();
        }
    }

    /// Runs until `pred(output so far)`, returning the time it took.
    fn run_until(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> Duration {
        let t0 = self.now;
        while !pred(&self.out) {
            assert!(
                self.now - t0 < limit,
                "not within {limit:?}; output: {:?}",
                self.out
            );
            self.now += ms(1);
            self.m.advance(self.now);
            self.collect();
        }
        self.now - t0
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.out)
    }

    fn status(&mut self) -> String {
        self.take();
        self.send(b"?");
        self.run(ms(5));
        self.take()
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.split("\r\n").filter(|l| !l.is_empty()).collect()
}

// ---- the error table ----------------------------------------------------

fn error_of(b: &mut Bench, line: &str) -> String {
    lines(&b.cmd(line)).join("|")
}

#[test]
fn error_2_bad_number_format() {
    let mut b = Bench::idle();
    assert_eq!(error_of(&mut b, "G0 X"), "error:2");
    assert_eq!(error_of(&mut b, "FOO"), "error:2");
}

#[test]
fn error_3_invalid_dollar_statement() {
    assert_eq!(error_of(&mut Bench::idle(), "$Q"), "error:3");
    assert_eq!(error_of(&mut Bench::idle(), "$999=1"), "error:3");
}

#[test]
fn error_4_negative_value() {
    assert_eq!(error_of(&mut Bench::idle(), "$110=-5"), "error:4");
}

#[test]
fn error_5_homing_not_enabled() {
    assert_eq!(error_of(&mut Bench::idle(), "$H"), "error:5");
}

#[test]
fn error_8_jog_while_not_idle() {
    let mut s = Settings::default();
    s.set(22, 1.0).unwrap();
    let mut b = Bench::new(s);
    assert_eq!(error_of(&mut b, "$J=G91 X1 F100"), "error:8");
}

#[test]
fn error_9_gcode_locked_out_in_alarm() {
    let mut s = Settings::default();
    s.set(22, 1.0).unwrap();
    let mut b = Bench::new(s);
    assert_eq!(error_of(&mut b, "G0 X1"), "error:9");
}

#[test]
fn error_11_line_over_80_characters() {
    let long = format!("G4P{}", "0".repeat(80));
    assert_eq!(error_of(&mut Bench::idle(), &long), "error:11");
    // Comments and spaces do not count toward the limit.
    let padded = format!("G4 P0 ({})", " ".repeat(100));
    assert_eq!(error_of(&mut Bench::idle(), &padded), "ok");
}

#[test]
fn error_15_jog_beyond_soft_limits() {
    let mut b = Bench::homed();
    assert_eq!(error_of(&mut b, "$J=G91 X10 F1000"), "error:15");
    assert_eq!(b.m.state(), State::Idle);
}

#[test]
fn error_20_unsupported_command() {
    assert_eq!(error_of(&mut Bench::idle(), "M7"), "error:20");
    assert_eq!(error_of(&mut Bench::idle(), "G0 A1"), "error:20");
}

#[test]
fn error_21_two_commands_from_one_modal_group() {
    assert_eq!(error_of(&mut Bench::idle(), "G54 G55"), "error:21");
}

#[test]
fn error_22_feed_rate_not_set() {
    assert_eq!(error_of(&mut Bench::idle(), "G1 X10"), "error:22");
    assert_eq!(error_of(&mut Bench::idle(), "$J=X1"), "error:22");
}

#[test]
fn error_25_repeated_word() {
    assert_eq!(error_of(&mut Bench::idle(), "G0 X1 X2"), "error:25");
}

#[test]
fn error_35_arc_without_its_arc_words() {
    assert_eq!(error_of(&mut Bench::idle(), "G2 X1 F100"), "error:35");
}

#[test]
fn error_37_tool_length_offset_on_an_axis_other_than_z() {
    assert_eq!(error_of(&mut Bench::idle(), "G43.1 X1"), "error:37");
}

// ---- alarms, homing, reset ------------------------------------------------

#[test]
fn the_banner_comes_at_power_on_and_homing_disabled_boots_idle() {
    let b = Bench::idle();
    assert_eq!(b.out, BANNER);
    assert_eq!(b.m.state(), State::Idle);
}

#[test]
fn homing_enabled_boots_into_alarm_and_dollar_x_unlocks() {
    let mut s = Settings::default();
    s.set(22, 1.0).unwrap();
    let mut b = Bench::new(s);
    assert!(b.take().ends_with("[MSG:'$H'|'$X' to unlock]\r\n"));
    assert_eq!(b.m.state(), State::Alarm);
    assert_eq!(lines(&b.cmd("$X")), vec!["[MSG:Caution: Unlocked]", "ok"]);
    assert_eq!(b.m.state(), State::Idle);
}

#[test]
fn homing_takes_its_time_answers_no_status_and_ends_idle() {
    let mut s = Settings::default();
    s.set(22, 1.0).unwrap();
    let mut b = Bench::new(s);
    b.take();
    b.send(b"$H\n");
    b.run(ms(100));
    assert_eq!(b.m.state(), State::Home);
    assert_eq!(b.status(), "", "no status report during homing");
    b.run(ms(10));
    let took = b.run_until(ms(20_000), |o| o.contains("ok"));
    // grbl 1.1's cycle with its defaults ($24=25, $25=500 mm/min, $26=250
    // ms, $27=1 mm, 10 mm/s²), Z then XY, from where it powered on (0):
    // per cycle, two 1 mm pull-offs at the seek rate (triangles, 2√(1/10)
    // = 0.632 s each), the 1 mm locate at the feed (1/0.4167 + 0.4167/10
    // = 2.442 s) and four 250 ms debounces: 4.707 s; twice: 9.414 s.
    // (110 ms of it passed before `took` began.)
    let took = took + ms(110);
    assert!(took >= ms(9_300) && took <= ms(9_530), "{took:?}");
    assert_eq!(b.m.state(), State::Idle);
}

#[test]
fn homing_takes_longer_the_further_the_machine_stands_from_its_switches() {
    let mut s = Settings::default();
    s.set(22, 1.0).unwrap();
    // It powered on 10 mm below its Z switch and 50 mm from its X one.
    let mut b = Bench {
        m: Machine::new(Config::default(), s, Duration::ZERO).powered_on_at([-50.0, 0.0, -10.0]),
        now: Duration::ZERO,
        out: String::new(),
    };
    assert_eq!(b.m.position(), [-50.0, 0.0, -10.0]);
    b.take();
    b.send(b"$H\n");
    let took = b.run_until(ms(40_000), |o| o.contains("ok"));
    // 9.414 s as from the switches, plus the seeks at 500 mm/min (8.33
    // mm/s, 10 mm/s²): Z 10 mm, 10/8.333 + 0.833 = 2.033 s; X 50 mm,
    // 50/8.333 + 0.833 = 6.833 s. 18.28 s in all.
    assert!(took >= ms(18_180) && took <= ms(18_400), "{took:?}");
    // Homed: where it stands is now machine zero, and grbl knows it.
    assert_eq!(b.m.position(), [0.0; 3]);
    assert!(b.status().contains("MPos:0.000,0.000,0.000"));
}

#[test]
fn a_hard_limit_alarm_silences_the_board_until_a_soft_reset() {
    let mut b = Bench::idle();
    b.take();
    b.m.raise_alarm(b.now, 1);
    b.collect();
    assert_eq!(lines(&b.take()), vec!["ALARM:1", "[MSG:Reset to continue]"]);
    b.run(ms(600));
    assert_eq!(b.status(), "", "not even ? is answered");
    assert_eq!(b.cmd("$$"), "", "lines are discarded");
    b.send(&[0x18]);
    b.run(ms(100));
    assert_eq!(
        b.take(),
        BANNER.to_string() + "[MSG:'$H'|'$X' to unlock]\r\n"
    );
    assert_eq!(b.m.state(), State::Alarm, "stays in alarm after the reset");
    assert_eq!(error_of(&mut b, "G0 X1"), "error:9");
    // Homing is disabled here, and a second reset keeps the lock too (grbl
    // keeps its prior state through a reset): only $X clears it.
    b.send(&[0x18]);
    b.run(ms(100));
    assert!(b.take().ends_with("[MSG:'$H'|'$X' to unlock]\r\n"));
    assert_eq!(b.m.state(), State::Alarm, "a second reset cleared the lock");
    assert!(b.cmd("$X").contains("ok"));
    assert_eq!(b.m.state(), State::Idle);
}

#[test]
fn a_soft_limit_on_a_program_move_is_alarm_2_and_silence() {
    let mut b = Bench::homed();
    assert_eq!(
        lines(&b.cmd("G0 X5")),
        vec!["ALARM:2", "[MSG:Reset to continue]"]
    );
    assert_eq!(b.status(), "");
    assert_eq!(b.m.state(), State::Alarm);
}

#[test]
fn an_unsolicited_alarm_stalls_the_board_for_half_a_second() {
    let mut b = Bench::idle();
    b.m.raise_alarm(b.now, 9);
    b.collect();
    b.take();
    b.send(b"$$\n");
    b.run(ms(400));
    assert_eq!(b.take(), "", "stalled");
    b.run(ms(200));
    assert!(b.take().ends_with("ok\r\n"));
}

#[test]
fn a_soft_reset_while_idle_brings_the_banner_back_in_about_35_ms() {
    let mut b = Bench::idle();
    b.take();
    b.send(&[0x18]);
    let took = b.run_until(ms(1000), |o| o.contains("Grbl 1.1h"));
    assert!(took >= ms(30) && took <= ms(40), "{took:?}");
    assert_eq!(b.m.state(), State::Idle);
}

#[test]
fn a_soft_reset_at_rest_keeps_a_homed_board_unlocked_and_where_it_was() {
    // Grbl's power-on lock (homing enabled) is set once, before its reset
    // loop: a reset at rest keeps the state and the position.
    let mut b = Bench::homed();
    b.cmd("G0 X-50 Y-20");
    b.run(ms(10_000));
    assert_eq!(b.m.state(), State::Idle);
    b.take();
    b.send(&[0x18]);
    let out = b.run_until(ms(1000), |o| o.contains("Grbl 1.1h"));
    assert!(out <= ms(40), "{out:?}");
    b.run(ms(5));
    assert!(
        !b.take().contains("unlock"),
        "a reset at rest locked the board"
    );
    assert_eq!(b.m.state(), State::Idle);
    assert_eq!(b.m.position(), [-50.0, -20.0, 0.0]);
    // After a feed hold has brought it to rest (Hold:0), likewise.
    b.cmd("G1 X-150 F2000");
    b.run(ms(500));
    b.send(b"!");
    b.run(ms(1000));
    assert_eq!(b.m.state(), State::Hold(0));
    let held = b.m.position();
    b.send(&[0x18]);
    b.run(ms(100));
    assert_eq!(b.m.state(), State::Idle);
    assert_eq!(b.m.position(), held);
}

#[test]
fn status_reports_go_on_during_a_hold_decelerating_then_at_rest() {
    let mut b = Bench::idle();
    b.cmd("G1 X-100 F3000");
    b.run(ms(500));
    b.send(b"!");
    b.run(ms(2));
    assert!(b.status().starts_with("<Hold:1|"), "decelerating");
    b.run(ms(1000));
    assert!(b.status().starts_with("<Hold:0|"), "at rest");
}

#[test]
fn a_soft_reset_during_motion_is_alarm_3_then_the_banner_then_alarm_state() {
    let mut b = Bench::idle();
    b.cmd("G0 X-50");
    b.run(ms(300));
    assert_eq!(b.m.state(), State::Run);
    b.take();
    b.send(&[0x18]);
    b.run(ms(5));
    assert_eq!(b.take(), "ALARM:3\r\n");
    let took = b.run_until(ms(2000), |o| o.contains("Grbl 1.1h"));
    assert!(took >= ms(580) && took <= ms(610), "{took:?}");
    assert_eq!(b.m.state(), State::Alarm);
}

// ---- streaming ----------------------------------------------------------

#[test]
fn ok_means_planned_not_done_and_g4_p0_answers_when_motion_is_done() {
    let mut b = Bench::idle();
    assert_eq!(b.cmd("G0 X-10"), "ok\r\n");
    assert_eq!(b.m.state(), State::Run);
    b.send(b"G4 P0\n");
    let took = b.run_until(ms(5000), |o| o.contains("ok"));
    assert!(took > ms(1900), "the G4 ok waits for the motion: {took:?}");
    assert_eq!(b.m.state(), State::Idle);
    assert_eq!(b.m.position(), [-10.0, 0.0, 0.0]);
}

/// grbl 1.1 dwells in whole steps of 50 ms (config.h `DWELL_TIME_STEP`):
/// nuts_bolts.c's `delay_sec` runs `ceil(1000/DWELL_TIME_STEP*seconds)`
/// of them, so any P up to 0.05 dwells 50 ms and P0.06 dwells 100 ms.
#[test]
fn a_dwell_lasts_whole_50_ms_steps_as_grbl_counts_them() {
    for (line, steps) in [
        ("G4 P0", 0),
        ("G4 P0.001", 1),
        ("G4 P0.05", 1),
        ("G4 P0.051", 2),
        ("G4 P0.06", 2),
        ("G4 P0.25", 5),
        ("G4 P0.3", 6),
        ("G4 P1.234", 25),
    ] {
        let mut b = Bench::idle();
        b.take();
        b.send(format!("{line}\n").as_bytes());
        let took = b.run_until(ms(3000), |o| o.contains("ok"));
        // The line's bytes take about 1 ms on the wire at 115200 baud.
        let dwell = ms(50 * steps);
        assert!(
            took >= dwell && took <= dwell + ms(3),
            "{line}: ok after {took:?}, against a dwell of {dwell:?}"
        );
    }
}

/// During a dwell grbl serves realtime commands only between its steps
/// (`delay_sec` calls `protocol_execute_realtime` once a step), so a `?`
/// is answered at the start of the next step, and the state reads Idle.
#[test]
fn a_status_asked_during_a_dwell_is_answered_at_its_next_step() {
    let mut b = Bench::idle();
    b.take();
    b.send(b"G4 P0.5\n");
    b.run(ms(120));
    assert_eq!(b.take(), "", "nothing said 120 ms into the dwell");
    b.send(b"?");
    // The dwell began about 1 ms in, so its next step starts at about 151 ms.
    let took = b.run_until(ms(400), |o| o.contains('<'));
    assert!(
        took >= ms(30) && took <= ms(37),
        "answered {took:?} after the ?, not at the next step"
    );
    assert!(b.take().starts_with("<Idle|"));
    // After the dwell, a ? is answered at once (the status latency).
    b.run_until(ms(600), |o| o.contains("ok"));
    b.take();
    b.send(b"?");
    let took = b.run_until(ms(100), |o| o.contains('<'));
    assert!(took <= ms(6), "{took:?}");
}

#[test]
fn a_g0_move_takes_the_trapezoid_time_from_its_rate_and_acceleration() {
    let mut b = Bench::idle();
    b.take();
    b.send(b"G0 X-10\nG4 P0\n");
    let took = b.run_until(ms(5000), |o| o.matches("ok").count() == 2);
    // 10 mm at $110 = 500 mm/min (8.33 mm/s) and $120 = 10 mm/s^2:
    // t = d/v + v/a = 1.2 s + 0.833 s.
    let v = 500.0 / 60.0;
    let expected = 10.0 / v + v / 10.0;
    let got = took.as_secs_f64();
    assert!(
        (got - expected).abs() / expected < 0.02,
        "{got} s vs {expected} s"
    );
}

#[test]
fn a_write_past_the_receive_buffer_loses_bytes_silently() {
    let mut b = Bench::idle();
    b.cmd("G91");
    b.take();
    let line = "G1X-0.5F100\n"; // 12 bytes
    let job = line.repeat(41);
    b.send(job.as_bytes());
    b.run(ms(100));
    // 15 lines go straight into the planner; 128 bytes wait in the receive
    // buffer (10 lines and 8 bytes of the 11th); the rest is dropped.
    assert_eq!(b.m.dropped_bytes, (41 * 12 - 15 * 12 - 128) as u64);
    assert_eq!(b.take().matches("ok").count(), 15);
    b.run(ms(60_000));
    let rest = b.take();
    assert_eq!(rest.matches("ok").count(), 10);
    assert!(
        !rest.contains("error"),
        "nothing is said about the lost lines: {rest:?}"
    );
}

#[test]
fn status_fields_come_and_go_by_key() {
    let mut b = Bench::idle();
    let first = b.status();
    assert!(
        first.starts_with("<Idle|MPos:0.000,0.000,0.000|FS:0,0|WCO:0.000,0.000,0.000>"),
        "{first}"
    );
    let second = b.status();
    assert!(!second.contains("WCO:"), "{second}");
    b.cmd("M8");
    assert!(b.status().contains("|A:F>"));
    // Two ? before the answer give one report.
    b.take();
    b.send(b"??");
    b.run(ms(5));
    assert_eq!(b.take().matches('<').count(), 1);
}

#[test]
fn coolant_waits_for_the_planner_like_grbl_does() {
    let mut b = Bench::idle();
    b.cmd("G0 X-10");
    b.send(b"M8\n");
    b.run(ms(500));
    assert!(!b.m.vacuum_on(), "M8 waits for the move");
    b.run_until(ms(5000), |o| o.contains("ok"));
    assert!(b.m.vacuum_on());
}

#[test]
fn a_feed_hold_decelerates_holds_and_resumes_to_the_target() {
    let mut b = Bench::idle();
    b.cmd("G0 X-50");
    b.run(ms(2000));
    b.send(b"!");
    b.run(ms(2));
    assert_eq!(b.m.state(), State::Hold(1));
    b.run(ms(1000));
    assert_eq!(b.m.state(), State::Hold(0));
    let held = b.m.position();
    b.take();
    b.send(b"G4 P0\n");
    b.run(ms(500));
    assert_eq!(
        b.take(),
        "",
        "a line sent during a hold waits for the resume"
    );
    assert_eq!(b.m.position(), held);
    b.send(b"~");
    b.run_until(ms(20_000), |o| o.contains("ok"));
    assert_eq!(b.m.position(), [-50.0, 0.0, 0.0]);
}

#[test]
fn a_jog_is_cancelled_by_0x85_without_a_reset() {
    let mut b = Bench::idle();
    assert_eq!(b.cmd("$J=G91 X-20 F600"), "ok\r\n");
    b.run(ms(500));
    assert_eq!(b.m.state(), State::Jog);
    b.send(&[0x85]);
    b.run(ms(5));
    assert_eq!(b.m.state(), State::Idle);
    let x = b.m.position()[0];
    assert!(x < 0.0 && x > -20.0, "{x}");
}

#[test]
fn dollar_dollar_lists_the_settings_and_dollar_i_the_buffers() {
    let mut b = Bench::idle();
    let out = b.cmd("$$");
    assert!(
        out.contains("$110=500.000\r\n") && out.contains("$22=0\r\n") && out.ends_with("ok\r\n"),
        "{out}"
    );
    assert_eq!(
        lines(&b.cmd("$I")),
        vec!["[VER:1.1h.20190830:]", "[OPT:V,15,128]", "ok"]
    );
}

/// The vacuum sensor on the probe input: `Pn:P` while something is held.
#[test]
fn the_probe_input_shows_as_pn_p_while_active() {
    let mut b = Bench::idle();
    assert!(!b.status().contains("Pn:"));
    b.m.set_probe(true);
    assert!(b.status().contains("|Pn:P>"), "{}", b.status());
    b.m.set_probe(false);
    assert!(!b.status().contains("Pn:"));
}

/// Fault injection: one line refused, the ones after it still executed.
#[test]
fn an_injected_error_refuses_just_the_next_line() {
    let mut b = Bench::idle();
    b.m.set_probe(false);
    b.m.fail_next_line(20);
    assert_eq!(b.cmd("G90"), "error:20\r\n");
    assert_eq!(b.cmd("G90"), "ok\r\n");
}

/// A board advanced only when the emulator's thread would wake (bytes from
/// the host, or [`wait_for`] its `quiet_until`) says and does what one
/// advanced every millisecond does, each line within a millisecond of it,
/// with far fewer wakes: homing, a status report at rest, moves, a dwell,
/// the vacuum on and off, a reset during motion and its banner.
#[test]
fn a_board_woken_only_when_it_is_due_answers_as_one_woken_every_millisecond() {
    use cncpick::sim::grbl::pty::wait_for;
    let sends: Vec<(Duration, &[u8])> = vec![
        (ms(100), b"$H\n"),
        (ms(9_600), b"?"),
        (ms(10_000), b"G0 X-10\nG4 P0.25\nM8\nG1 Y-5 F600\nM9\n"),
        (ms(13_000), b"?"),
        (ms(13_500), b"G0 X-30\n"),
        (ms(13_700), b"\x18"),
        (ms(14_500), b"$X\n"),
        (ms(15_000), b"G4 P0.3\n"),
    ];
    let end = ms(16_000);
    let mut s = Settings::default();
    s.set(22, 1.0).unwrap();
    s.set(20, 1.0).unwrap();
    // Every line said, with when; and when the board was advanced.
    let run = |every_ms: bool| -> (Vec<(Duration, String)>, Vec<Duration>) {
        let mut m = Machine::new(Config::default(), s.clone(), Duration::ZERO);
        let mut said = vec![(
            Duration::ZERO,
            String::from_utf8_lossy(&m.take_output()).into_owned(),
        )];
        let (mut now, mut next_send, mut wakes) = (Duration::ZERO, 0, vec![]);
        while now < end {
            let due = sends.get(next_send).map(|&(t, _)| t);
            let next = if every_ms {
                now + ms(1)
            } else {
                now + wait_for(m.quiet_until(), now, 1.0)
            };
            now = due.map_or(next, |d| d.min(next));
            if due == Some(now) {
                m.receive(now, sends[next_send].1);
                next_send += 1;
            }
            m.advance(now);
            wakes.push(now);
            let out = String::from_utf8_lossy(&m.take_output()).into_owned();
            said.extend(out.split_inclusive('\n').map(|l| (now, l.to_string())));
        }
        said.retain(|(_, l)| !l.is_empty());
        (said, wakes)
    };
    let (every, every_wakes) = run(true);
    let (due, due_wakes) = run(false);
    let text = |v: &[(Duration, String)]| v.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>();
    assert_eq!(text(&due), text(&every));
    for ((t_due, line), (t_every, _)) in due.iter().zip(&every) {
        let apart = t_due.abs_diff(*t_every);
        assert!(
            apart <= ms(1),
            "{line:?} at {t_due:?}, every ms at {t_every:?}"
        );
    }
    for expect in [
        "ok",
        "<Idle|",
        "ALARM:3",
        "Grbl 1.1h",
        "[MSG:Caution: Unlocked]",
    ] {
        assert!(
            every.iter().any(|(_, l)| l.starts_with(expect)),
            "{expect}: {every:?}"
        );
    }
    // Within the homing cycle (9.4 s from 0.1 s) nothing is due but its
    // end: a wake every 10 ms at most, not every millisecond.
    let homing = |w: &[Duration]| w.iter().filter(|&&t| t > ms(200) && t <= ms(9_200)).count();
    assert_eq!(homing(&every_wakes), 9_000);
    assert!(homing(&due_wakes) <= 900, "{} wakes", homing(&due_wakes));
    assert!(
        due_wakes.len() < every_wakes.len() / 3,
        "{}",
        due_wakes.len()
    );
}

/// The board thread's wait is wall-clock: emulator time runs `time_scale`
/// times faster, and the wait stays between 1 and 10 ms of either clock.
#[test]
fn the_board_threads_wait_is_the_time_until_something_is_due_on_the_wall_clock() {
    use cncpick::sim::grbl::pty::wait_for;
    let us = Duration::from_micros;
    let at = ms(500);
    assert_eq!(wait_for(Some(at + ms(5)), at, 1.0), ms(5));
    assert_eq!(wait_for(Some(at + ms(3)), at, 2.0), us(1_500));
    assert_eq!(
        wait_for(Some(at + us(200)), at, 1.0),
        ms(1),
        "at least 1 ms"
    );
    assert_eq!(wait_for(Some(at - ms(2)), at, 1.0), ms(1), "overdue");
    assert_eq!(wait_for(None, at, 1.0), ms(10), "nothing due");
    assert_eq!(wait_for(Some(at + ms(60)), at, 1.0), ms(10));
    assert_eq!(
        wait_for(Some(at + ms(60)), at, 4.0),
        us(2_500),
        "10 ms of emulator time"
    );
    assert_eq!(wait_for(None, at, 0.25), ms(10), "10 ms of wall time");
}
