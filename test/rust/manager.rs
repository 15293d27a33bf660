//! The manager's pure core (heartbeat watch, recoveries, breakers, alerts)
//! on a fake clock, its KPIs and Prometheus page, the main job's report,
//! and the cell graph read from the shipped params files.

use cncpick::cell::report::{
    parse_vision_id, traces, traces_csv, EventRec, Heard, Heard2, PickRec, Report, TruthRec,
};
use cncpick::cell::spec::{check, CellArgs};
use cncpick::kit::lifecycle::State;
use cncpick::manager::core::{Config, Input, ManagerCore, Output, Severity};
use cncpick::manager::metrics::{MetricsConfig, MetricsCore, Sample};
use std::path::PathBuf;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn alerts(out: &[Output]) -> Vec<(Severity, &'static str, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Alert(a) => Some((a.severity, a.name, a.node.clone())),
            _ => None,
        })
        .collect()
}

fn recovers(out: &[Output]) -> Vec<(String, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Recover { node, respawn } => Some((node.clone(), *respawn)),
            _ => None,
        })
        .collect()
}

/// Two nodes wanted active and beating every second up to `until_s`.
fn watched(until_s: u32) -> ManagerCore {
    let mut c = ManagerCore::new(Config::default(), &names(&["tracker", "cnc_1"]));
    for n in ["tracker", "cnc_1"] {
        c.step(
            0.0,
            Input::Want {
                node: n.into(),
                active: true,
            },
        );
    }
    for t in 0..=until_s {
        for n in ["tracker", "cnc_1"] {
            let out = c.step(
                t as f64,
                Input::Beat {
                    node: n.into(),
                    state: State::Active,
                },
            );
            assert!(out.is_empty(), "{out:?}");
        }
        assert!(c.step(t as f64 + 0.5, Input::Tick).is_empty());
    }
    c
}

#[test]
fn a_silent_node_is_warned_about_at_agent_heartbeat_s_and_restarted_at_critical_s() {
    let mut c = watched(10);
    // cnc_1 falls silent after its beat at 10 s; the tracker keeps beating.
    let mut seen = Vec::new();
    let mut t = 10.0;
    while t < 25.0 {
        t += 0.1;
        c.step(
            t,
            Input::Beat {
                node: "tracker".into(),
                state: State::Active,
            },
        );
        let out = c.step(t, Input::Tick);
        for a in alerts(&out) {
            seen.push((t, a));
        }
        for (node, respawn) in recovers(&out) {
            assert!(respawn, "a silent node's process is restarted");
            seen.push((t, (Severity::Info, "RECOVER", node)));
        }
    }
    let at = |name: &str| seen.iter().find(|(_, a)| a.1 == name).map(|(t, _)| *t);
    let warned = at("node_silent").expect("a node_silent warning");
    assert!((13.0..13.2).contains(&warned), "warned at {warned}");
    let critical = at("node_offline").expect("a node_offline alert");
    assert!((20.0..20.2).contains(&critical), "critical at {critical}");
    let recover: Vec<_> = seen.iter().filter(|(_, a)| a.1 == "RECOVER").collect();
    assert_eq!(recover.len(), 1, "one restart while it recovers: {seen:?}");
    assert!(seen.iter().all(|(_, a)| a.2 == "cnc_1"), "{seen:?}");
    // Exactly one of each: no alert storm.
    assert_eq!(seen.len(), 3, "{seen:?}");
}

/// cnc_1 beats every 0.1 s for `n` - 1 steps after `from_s`, and nothing
/// comes out of the core.
fn cnc_1_beats_quietly(c: &mut ManagerCore, from_s: f64, n: u32) {
    for k in 1..n {
        let t = from_s + k as f64 * 0.1;
        c.step(
            t,
            Input::Beat {
                node: "cnc_1".into(),
                state: State::Active,
            },
        );
        assert!(c.step(t, Input::Tick).is_empty(), "at {t}");
    }
}

#[test]
fn an_exited_process_is_respawned_at_once_and_only_once() {
    let mut c = watched(5);
    let out = c.step(
        5.2,
        Input::Exited {
            node: "tracker".into(),
        },
    );
    assert_eq!(
        alerts(&out),
        vec![(Severity::Critical, "node_exited", "tracker".to_string())]
    );
    assert_eq!(recovers(&out), vec![("tracker".to_string(), true)]);
    // While it recovers, nothing more; its old heartbeat is not held against it.
    cnc_1_beats_quietly(&mut c, 5.2, 30);
    let out = c.step(
        8.2,
        Input::Recovered {
            node: "tracker".into(),
            ok: true,
        },
    );
    assert_eq!(
        alerts(&out),
        vec![(Severity::Info, "node_recovered", "tracker".to_string())]
    );
    // No second restart, and no silence warning for the old beat.
    cnc_1_beats_quietly(&mut c, 8.2, 20);
}

#[test]
fn a_live_node_out_of_active_past_the_grace_is_reconfigured_without_a_respawn() {
    let mut c = watched(5);
    let mut out = Vec::new();
    let mut t = 5.0;
    while out.is_empty() && t < 20.0 {
        t += 0.5;
        for n in ["tracker", "cnc_1"] {
            let state = if n == "cnc_1" {
                State::Unconfigured
            } else {
                State::Active
            };
            c.step(
                t,
                Input::Beat {
                    node: n.into(),
                    state,
                },
            );
        }
        out = c.step(t, Input::Tick);
    }
    // Unconfigured from 5.5 s; recover_grace_s is 5 s.
    assert!((10.5..=11.0).contains(&t), "at {t}");
    assert_eq!(recovers(&out), vec![("cnc_1".to_string(), false)]);
    assert_eq!(alerts(&out)[0].1, "node_not_active");
}

#[test]
fn failed_recoveries_open_the_node_breaker_and_it_probes_again_after_breaker_open_s() {
    let cfg = Config {
        breaker_failures: 3,
        breaker_open_s: 60.0,
        ..Config::default()
    };
    let mut c = ManagerCore::new(cfg, &names(&["detector"]));
    c.step(
        0.0,
        Input::Want {
            node: "detector".into(),
            active: true,
        },
    );
    let mut attempts = Vec::new();
    let mut opened = Vec::new();
    let mut t = 0.0;
    while t < 200.0 {
        t += 0.5;
        // It never comes back: every process it gets exits at once.
        let mut out = c.step(
            t,
            Input::Exited {
                node: "detector".into(),
            },
        );
        out.extend(c.step(t, Input::Tick));
        for (node, _) in recovers(&out) {
            attempts.push(t);
            c.step(t + 0.1, Input::Recovered { node, ok: false });
        }
        opened.extend(
            alerts(&out)
                .into_iter()
                .filter(|a| a.1 == "circuit_open")
                .map(|_| t),
        );
    }
    // Three in a row, then the breaker holds it off for 60 s, then one probe.
    assert!(attempts.len() >= 4, "{attempts:?}");
    assert!(attempts[2] - attempts[0] < 2.0, "{attempts:?}");
    let gap = attempts[3] - attempts[2];
    assert!((59.5..=61.0).contains(&gap), "{attempts:?}");
    // One critical alert per opening: after the third failure, and after
    // each failed probe.
    assert_eq!(opened.len(), attempts.len() - 2, "{opened:?} {attempts:?}");
}

#[test]
fn a_node_not_wanted_is_not_watched() {
    let mut c = ManagerCore::new(Config::default(), &names(&["scheduler"]));
    assert!(c.step(100.0, Input::Tick).is_empty());
    c.step(
        100.0,
        Input::Want {
            node: "scheduler".into(),
            active: true,
        },
    );
    // Silence counts from when it was wanted.
    assert!(c.step(102.9, Input::Tick).is_empty());
    assert_eq!(alerts(&c.step(103.1, Input::Tick))[0].1, "node_silent");
    c.step(
        103.2,
        Input::Want {
            node: "scheduler".into(),
            active: false,
        },
    );
    assert!(c.step(200.0, Input::Tick).is_empty());
}

fn id(n: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = n;
    a
}

#[test]
fn kpis_count_the_window_and_the_miss_rate_alert_has_hysteresis() {
    let mut m = MetricsCore::new(MetricsConfig {
        window_s: 60.0,
        lanes: 2,
        belt_length_m: 4.0,
        cnc_ids: vec!["1".into(), "2".into()],
        miss_rate_warning: 0.1,
        min_samples: 10,
    });
    // 20 objects: lane k % 2; 16 picked (cycle 2 s by CNC 1, 4 s by CNC 2),
    // 3 missed, 1 bypassed.
    let objs: Vec<_> = (0..20u8).map(|k| (id(k), k % 2)).collect();
    m.add(0.0, Sample::Tracks { objects: objs });
    for k in 0..20u8 {
        let t = k as f64;
        m.add(
            t,
            Sample::Event {
                object: id(k),
                from: 0,
                to: 1,
                cnc: String::new(),
            },
        );
        let (to, cnc) = match k {
            0..=15 => (4, if k % 2 == 0 { "1" } else { "2" }),
            16..=18 => (6, ""),
            _ => (7, ""),
        };
        m.add(
            t + 5.0,
            Sample::Event {
                object: id(k),
                from: if to == 4 { 3 } else { 1 },
                to,
                cnc: cnc.into(),
            },
        );
        if to == 4 {
            m.add(
                t + 5.0,
                Sample::Pick {
                    cnc: cnc.into(),
                    outcome: 0,
                    cycle_time_s: if cnc == "1" { 2.0 } else { 4.0 },
                },
            );
        }
        m.add(
            t,
            Sample::Status {
                cnc: "1".into(),
                busy: k % 4 == 0,
                queue_depth: 1,
            },
        );
    }
    m.add(
        10.0,
        Sample::Node {
            node: "tracker".into(),
            messages: 100,
            errors: 0,
            queue_depth: 0,
            latency_s: Some(0.002),
        },
    );
    m.add(
        20.0,
        Sample::Node {
            node: "tracker".into(),
            messages: 400,
            errors: 3,
            queue_depth: 0,
            latency_s: Some(0.004),
        },
    );
    let k = m.kpis(25.0);
    assert_eq!((k.picked, k.missed, k.bypassed, k.dropped), (16, 3, 1, 0));
    assert!((k.pick_success_rate - 16.0 / 19.0).abs() < 1e-12);
    assert!((k.miss_rate - 3.0 / 19.0).abs() < 1e-12);
    assert!((k.objects_per_min - 20.0).abs() < 1e-12);
    assert!((k.avg_cycle_time_s - 3.0).abs() < 1e-12);
    let c1 = &k.cncs[0];
    assert_eq!((c1.cnc_id.as_str(), c1.picks), ("1", 8));
    assert!((c1.utilisation - 5.0 / 20.0).abs() < 1e-12);
    assert!((k.lanes[0].throughput_per_min - 8.0).abs() < 1e-12);
    // Lane 0 holds objects 0, 2, ..., 18: misses 16 and 18.
    assert!((k.lanes[0].miss_rate - 2.0 / 10.0).abs() < 1e-12);
    assert!((k.lanes[1].congestion - 10.0 / 4.0).abs() < 1e-12);
    let t = &k.nodes[0];
    assert!((t.message_rate_hz - 30.0).abs() < 1e-9);
    assert!((t.error_rate - 0.01).abs() < 1e-12);
    assert!((t.processing_latency_s - 0.004).abs() < 1e-12);
    // Past the window, nothing is left.
    let later = m.kpis(200.0);
    assert_eq!(later.picked, 0);

    assert_eq!(m.miss_rate_alert(&k), Some(true));
    assert_eq!(m.miss_rate_alert(&k), None, "edge-triggered");
    let mut ok = k.clone();
    ok.miss_rate = 0.09;
    assert_eq!(
        m.miss_rate_alert(&ok),
        None,
        "hysteresis: 0.09 is not under 0.08"
    );
    ok.miss_rate = 0.05;
    assert_eq!(m.miss_rate_alert(&ok), Some(false));
    let mut few = k.clone();
    few.picked = 2;
    few.missed = 1;
    few.miss_rate = 0.33;
    assert_eq!(m.miss_rate_alert(&few), None, "too few samples to alert");
}

#[test]
fn kpis_count_an_object_s_arrival_and_end_once_however_often_their_events_are_heard() {
    let mut m = MetricsCore::new(MetricsConfig {
        window_s: 60.0,
        lanes: 1,
        belt_length_m: 4.0,
        cnc_ids: vec!["1".into()],
        miss_rate_warning: 0.1,
        min_samples: 1,
    });
    let ev = |k: u8, from: u8, to: u8| Sample::Event {
        object: id(k),
        from,
        to,
        cnc: "1".into(),
    };
    // Object 0: registered, assigned, revoked (ASSIGNED → DETECTED: not a
    // second arrival), assigned again, picked. Object 1: registered, missed.
    let lives = [
        ev(0, 0, 1),
        ev(1, 0, 1),
        ev(0, 1, 2),
        ev(0, 2, 1),
        ev(0, 1, 2),
        ev(0, 2, 3),
        ev(0, 3, 4),
        ev(1, 1, 6),
    ];
    for (i, e) in lives.iter().enumerate() {
        m.add(i as f64, e.clone());
    }
    let once = m.kpis(10.0);
    assert_eq!(
        (once.picked, once.missed, once.objects_per_min),
        (1, 1, 2.0),
        "a revoke is not an arrival"
    );
    // A restarted state manager republishes its latest events, and a
    // re-subscribing manager hears the topic's history again: all of them
    // once more, within the window.
    for (i, e) in lives.iter().enumerate() {
        m.add(20.0 + i as f64, e.clone());
    }
    let again = m.kpis(30.0);
    assert_eq!(
        (again.picked, again.missed, again.objects_per_min),
        (1, 1, 2.0),
        "events heard again count once"
    );
    assert!((again.miss_rate - 0.5).abs() < 1e-12);
    // A new object still counts.
    m.add(31.0, ev(2, 0, 1));
    m.add(32.0, ev(2, 1, 6));
    let k = m.kpis(33.0);
    assert_eq!((k.missed, k.objects_per_min), (2, 3.0));
}

#[test]
fn the_lane_memory_forgets_objects_whose_end_was_never_heard() {
    let mut m = MetricsCore::new(MetricsConfig {
        window_s: 60.0,
        lanes: 4,
        belt_length_m: 4.0,
        cnc_ids: vec!["1".into()],
        miss_rate_warning: 0.1,
        min_samples: 10,
    });
    let key = |n: u32| {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&n.to_le_bytes());
        a
    };
    // 1,000 s of tracks: each object in view for 5 s (5 objects at once,
    // a new one a second), and no event ever heard for any of them.
    for t in 0..1000u32 {
        let objects = (t.saturating_sub(4)..=t)
            .map(|n| (key(n), (n % 4) as u8))
            .collect();
        m.add(t as f64, Sample::Tracks { objects });
    }
    // Two windows' worth and the live ones, not 1,000.
    let held = m.lanes_remembered();
    assert!((120..=126).contains(&held), "{held} lanes remembered");
    // An object that left the view 90 s ago (within two windows) still
    // has its lane when its end is heard; one gone for 200 s has none.
    m.add(
        1000.0,
        Sample::Event {
            object: key(905),
            from: 1,
            to: 6,
            cnc: String::new(),
        },
    );
    m.add(
        1000.0,
        Sample::Event {
            object: key(795),
            from: 1,
            to: 6,
            cnc: String::new(),
        },
    );
    let k = m.kpis(1000.0);
    assert_eq!(k.missed, 2);
    let by_lane: Vec<f64> = k.lanes.iter().map(|l| l.miss_rate).collect();
    assert_eq!(
        by_lane,
        vec![0.0, 1.0, 0.0, 0.0],
        "only 905 (lane 1) has a lane"
    );
}

#[test]
fn the_prometheus_page_has_the_seed_names_with_labels() {
    let mut m = MetricsCore::new(MetricsConfig {
        window_s: 60.0,
        lanes: 4,
        belt_length_m: 4.0,
        cnc_ids: vec!["1".into(), "2".into()],
        miss_rate_warning: 0.1,
        min_samples: 10,
    });
    m.add(
        1.0,
        Sample::Pick {
            cnc: "2".into(),
            outcome: 0,
            cycle_time_s: 3.5,
        },
    );
    let text = cncpick::manager::prom::render(&m.kpis(2.0));
    for line in [
        "cncpick_objects_per_minute 0.0",
        "cncpick_average_cycle_time_seconds 3.5",
        "cncpick_cnc_picks{cnc=\"2\"} 1.0",
        "cncpick_lane_congestion_score{lane=\"3\"} 0.0",
        "# TYPE cncpick_pickup_success_rate gauge",
        "# TYPE cncpick_system_utilization gauge",
        "# EOF",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

fn ev(seq: u64, object: u8, to: u8, t: f64) -> EventRec {
    EventRec {
        seq,
        object: id(object),
        vision_id: format!(
            "vision_{}_{}_{}",
            1000 * (object as u64),
            object % 4,
            object
        ),
        to,
        cnc: "1".into(),
        stamp_s: t,
        belt_position_m: 0.0,
    }
}

#[test]
fn the_report_counts_outcomes_latency_and_broken_invariants() {
    assert_eq!(parse_vision_id("vision_1500_3_7"), Some((1.5, 3)));
    assert_eq!(parse_vision_id("truth_1_2"), None);
    let mut h = Heard::default();
    // Object 1: picked (registered 0.1 s after its exposure at 1 s).
    h.events.push(ev(1, 1, 1, 1.1));
    h.events.push(ev(2, 1, 2, 2.0));
    h.events.push(ev(3, 1, 3, 3.0));
    h.events.push(ev(4, 1, 4, 4.0));
    // A restarted state manager's republished copy of event 4.
    h.events.push(ev(4, 1, 4, 4.0));
    // Object 2: missed. Object 3: left DETECTED at 3.05 s (stuck by 100 s).
    h.events.push(ev(5, 2, 1, 2.2));
    h.events.push(ev(6, 2, 6, 9.0));
    h.events.push(ev(8, 3, 1, 3.05));
    h.picks.push(PickRec {
        cnc: "1".into(),
        outcome: 0,
        cycle_time_s: 2.5,
        stamp_s: 4.0,
    });
    h.truth.push(TruthRec {
        sim_id: 9,
        kind: 2,
        stamp_s: 4.0,
    });
    let r = Report::of(&h, 60.0, 100.0, 4, 30.0, true);
    assert_eq!((r.objects, r.picked, r.missed, r.in_flight), (3, 1, 1, 1));
    assert_eq!(r.stuck, 1);
    assert_eq!(
        r.picked_twice, 0,
        "a republished event is not a second pick"
    );
    assert_eq!(r.event_gaps, 1, "seq 7 never heard");
    assert!((r.success_rate - 0.5).abs() < 1e-12);
    assert_eq!(r.exposure_to_registered_ms.n, 3);
    assert!((r.exposure_to_registered_ms.p50 - 100.0).abs() < 1e-6);
    assert_eq!(r.registered_to_assigned_s.n, 1);
    assert_eq!(r.cncs[0].picked, 1);
    assert_eq!(r.lanes[1].picked, 1);
    assert_eq!(r.lanes[2].missed, 1);
    assert!(!r.invariants_hold(), "object 3 is stuck");
    assert!(r.text().contains("stuck 1"));

    // An object that starts twice, and one the world bins twice.
    h.events.retain(|e| e.object != id(3));
    h.events.push(ev(7, 1, 3, 3.5));
    h.truth.push(h.truth[0].clone());
    let r = Report::of(&h, 60.0, 100.0, 4, 30.0, true);
    assert_eq!(r.picked_twice, 1);
    assert_eq!(r.truth.as_ref().map(|t| t.binned_twice), Some(1));
    assert!(!r.invariants_hold());
}

/// Each object's trace follows it stage by stage from its first exposure,
/// and the pipeline's latencies are a stamped message's age when heard.
#[test]
fn traces_follow_each_object_from_exposure_to_goal_accepted() {
    let mut h = Heard::default();
    // Object 1, first seen in the frame exposed at 1 s: detections heard at
    // 1.009 s, its first track at 1.080 s (a later frame, 1.067 s), registered
    // at 1.1 s, its Assignment heard at 1.975 s on the frame of 1.967 s,
    // PICKING at 3 s.
    h.detections.push(Heard2 {
        stamp_s: 1.0,
        heard_s: 1.009,
    });
    h.detections.push(Heard2 {
        stamp_s: 1.033,
        heard_s: 1.045,
    });
    h.tracks.push(Heard2 {
        stamp_s: 1.067,
        heard_s: 1.080,
    });
    h.first_tracked.insert(
        id(1),
        Heard2 {
            stamp_s: 1.067,
            heard_s: 1.080,
        },
    );
    h.assignments.push((
        id(1),
        Heard2 {
            stamp_s: 1.967,
            heard_s: 1.975,
        },
    ));
    h.events.push(ev(1, 1, 1, 1.1));
    // The scheduler asked for ASSIGNED at 1.970 s (the event's stamp).
    h.events.push(ev(2, 1, 2, 1.970));
    h.events.push(ev(3, 1, 3, 3.0));
    // Object 2: registered only, never assigned; its frame never heard.
    h.events.push(ev(4, 2, 1, 2.1));

    let r = Report::of(&h, 60.0, 10.0, 4, 30.0, false);
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert_eq!(r.exposure_to_detections_ms.n, 2);
    assert!(near(r.exposure_to_detections_ms.max, 12.0));
    assert!(near(r.exposure_to_tracks_ms.p50, 13.0));
    assert!(near(r.exposure_to_assignment_ms.p50, 8.0));
    assert!(near(r.assigned_to_goal_accepted_s.p50, 3.0 - 1.970));
    assert!(near(r.exposure_to_decision_ms.p50, 3.0));
    assert!(near(r.decision_to_assignment_ms.p50, 5.0));
    assert!(
        r.text().contains("assignment  p50 8.000 ms"),
        "{}",
        r.text()
    );

    let t = traces(&h);
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].vision_id, "vision_1000_1_1");
    let stages = [
        t[0].detections_s,
        t[0].tracked_s,
        t[0].registered_s,
        t[0].assigned_s,
        t[0].goal_accepted_s,
    ];
    let want = [0.009, 0.080, 0.1, 0.975, 2.0];
    for (got, want) in stages.iter().zip(want) {
        assert!(got.is_some_and(|g| near(g, want)), "{stages:?}");
    }
    assert!(
        t[0].assignment_age_ms.is_some_and(|a| near(a, 8.0)),
        "{:?}",
        t[0].assignment_age_ms
    );
    assert_eq!(t[0].last_state, 3);
    assert_eq!((t[1].detections_s, t[1].assigned_s), (None, None));
    assert_eq!(t[1].assignment_age_ms, None);
    assert!(t[1].registered_s.is_some_and(|g| near(g, 0.1)));
    let csv = traces_csv(&t);
    assert_eq!(csv.lines().count(), 3);
    assert!(
        csv.lines()
            .nth(1)
            .is_some_and(|l| l.contains(",0.975000,8.000000,2.000000,3")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .nth(2)
            .is_some_and(|l| l.ends_with(",,0.100000,,,,1")),
        "{csv}"
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_shipped_params_files_describe_their_graphs() {
    let sim = CellArgs::new(vec![repo().join("params/sim.yaml")], &[]).unwrap();
    let spec = check(&sim).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(spec.sim);
    assert_eq!(
        spec.node_names(),
        names(&[
            "sim",
            "state_manager",
            "camera",
            "detector",
            "tracker",
            "cnc_1",
            "cnc_2",
            "scheduler"
        ])
    );
    let cell = CellArgs::new(vec![repo().join("params/cell.yaml")], &[]).unwrap();
    let spec = check(&cell).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!spec.sim);
    assert_eq!(
        spec.nodes.iter().filter(|n| n.executable == "cnc").count(),
        2
    );
    // A third CNC named by the scheduler gets its node (and needs a section).
    let three = CellArgs::new(
        vec![repo().join("params/cell.yaml")],
        &["scheduler.cnc_ids:=['1','2','3']".to_string()],
    )
    .unwrap();
    let errors = check(&three).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.key == "cnc_3.cnc_id" && e.problem.contains("cnc_3")),
        "{errors:?}"
    );
}

/// Each load scenario, laid over the simulated cell, passes every check and
/// changes the simulated world only, each in its own way.
#[test]
fn the_load_scenarios_lay_over_the_simulated_cell_and_change_only_the_world() {
    use cncpick::sim::params::SimParams;
    let base: SimParams = CellArgs::new(vec![repo().join("params/sim.yaml")], &[])
        .unwrap()
        .load("sim")
        .unwrap();
    let mut seen = Vec::new();
    for e in std::fs::read_dir(repo().join("params/load")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let sections: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('#') && l.ends_with(':'))
            .collect();
        assert_eq!(sections, vec!["sim:"], "{}", path.display());
        let args = CellArgs::new(vec![repo().join("params/sim.yaml"), path.clone()], &[]).unwrap();
        check(&args).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let p: SimParams = args.load("sim").unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let what = (
            p.arrival_rate_per_min,
            p.burst_probability,
            p.lane_bias.clone(),
            p.speed_profile.clone(),
            p.drop_probability,
            p.fault_rate_per_min,
        );
        if name == "nominal.yaml" {
            assert_eq!(p.arrival_rate_per_min, base.arrival_rate_per_min);
        } else {
            assert!(
                !seen.iter().any(|(_, w)| *w == what),
                "{name} repeats another scenario"
            );
        }
        seen.push((name, what));
    }
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "nominal.yaml",
        "seed-7.2.yaml",
        "bursts.yaml",
        "lane-bias.yaml",
        "belt-drift.yaml",
        "belt-stops.yaml",
        "overload.yaml",
    ] {
        assert!(names.contains(&want), "no {want} in params/load");
    }
    let seed = &seen.iter().find(|(n, _)| n == "seed-7.2.yaml").unwrap().1;
    assert_eq!(
        (seed.0, seed.4),
        (100.0, 0.05),
        "the seed's LoadTestScenario"
    );
}

/// A CNC that homes is configuring for up to its homing_timeout_s: a
/// manager that would reconfigure it sooner is refused, naming both.
#[test]
fn check_config_refuses_a_recovery_grace_shorter_than_homing() {
    let with = |extra: &[&str]| {
        let mut o: Vec<String> = vec!["cnc_1.homing:=true".into(), "sim.cnc_homing:=true".into()];
        o.extend(extra.iter().map(|s| s.to_string()));
        check(&CellArgs::new(vec![repo().join("params/sim.yaml")], &o).unwrap())
    };
    let errors = with(&[]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "manager.recover_grace_s");
    assert!(
        errors[0].problem.contains("cnc_1.homing_timeout_s (30 s)"),
        "{}",
        errors[0]
    );
    with(&["manager.recover_grace_s:=35.0"]).unwrap_or_else(|e| panic!("{e:?}"));
    with(&["cnc_1.homing_timeout_s:=4.0"]).unwrap_or_else(|e| panic!("{e:?}"));
}

#[test]
fn check_config_blames_a_cnc_that_disagrees_with_the_simulated_cell() {
    let args = CellArgs::new(
        vec![repo().join("params/sim.yaml")],
        &[
            "cnc_2.origin_x_m:=3.0".to_string(),
            "cnc_1.port:=/dev/x".to_string(),
        ],
    )
    .unwrap();
    let errors = check(&args).unwrap_err();
    let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, vec!["cnc_1.port", "cnc_2.origin"], "{errors:?}");
    assert!(errors[1].to_string().contains("params/sim.yaml"));
    assert!(CellArgs::new(vec![], &["nodot:=1".to_string()]).is_err());
    assert!(CellArgs::new(vec![repo().join("params/none.yaml")], &[]).is_err());
}

/// A respawned state manager is a new DDS participant: its transition event
/// can go out before the manager's subscription has matched it, and is
/// then never heard. The manager's own recovery of it is the activation.
/// A manager core over the state manager, the tracker and two CNCs
/// (the epoch holders), every one of them wanted Active.
fn cell_with_two_cncs_wanted_active() -> ManagerCore {
    let cfg = Config {
        epoch_holders: names(&["cnc_1", "cnc_2"]),
        ..Config::default()
    };
    let all = names(&["state_manager", "tracker", "cnc_1", "cnc_2"]);
    let mut c = ManagerCore::new(cfg, &all);
    for n in &all {
        c.step(
            0.0,
            Input::Want {
                node: n.clone(),
                active: true,
            },
        );
    }
    c
}

/// The nodes re-activated (for a new epoch) among `out`.
fn reactivated(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reactivate { node } => Some(node.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_cnc_the_scheduler_finds_in_a_refused_epoch_is_re_activated_once() {
    let mut c = cell_with_two_cncs_wanted_active();
    // Not an epoch holder, or not a node at all: nothing.
    for node in ["tracker", "cnc_9", ""] {
        let out = c.step(1.0, Input::EpochStale { node: node.into() });
        assert!(out.is_empty(), "{node:?}: {out:?}");
    }
    let out = c.step(
        2.0,
        Input::EpochStale {
            node: "cnc_2".into(),
        },
    );
    assert_eq!(reactivated(&out), vec!["cnc_2"], "only the stale one");
    assert!(alerts(&out)
        .iter()
        .any(|a| a.1 == "epoch_fenced" && a.2 == "cnc_2"));
    // Reported again while its re-activation is under way: nothing more.
    let out = c.step(
        2.5,
        Input::EpochStale {
            node: "cnc_2".into(),
        },
    );
    assert!(reactivated(&out).is_empty(), "{out:?}");
    c.step(
        3.0,
        Input::Recovered {
            node: "cnc_2".into(),
            ok: true,
        },
    );
    // Stale again later (another missed activation): again.
    let out = c.step(
        40.0,
        Input::EpochStale {
            node: "cnc_2".into(),
        },
    );
    assert_eq!(reactivated(&out), vec!["cnc_2"]);
    // Not while the cell is paused (the CNC not wanted Active).
    c.step(
        41.0,
        Input::Want {
            node: "cnc_1".into(),
            active: false,
        },
    );
    let out = c.step(
        42.0,
        Input::EpochStale {
            node: "cnc_1".into(),
        },
    );
    assert!(reactivated(&out).is_empty(), "{out:?}");
}

#[test]
fn the_manager_s_own_recovery_of_the_state_manager_fences_the_cncs_without_its_transition_event() {
    let mut c = cell_with_two_cncs_wanted_active();
    // Another node's recovery, or a failed one of the state manager: the
    // epochs were not raised.
    for (node, ok) in [("tracker", true), ("state_manager", false)] {
        let out = c.step(
            1.0,
            Input::Recovered {
                node: node.into(),
                ok,
            },
        );
        assert!(reactivated(&out).is_empty(), "{node} {ok}: {out:?}");
    }
    let out = c.step(
        2.0,
        Input::Recovered {
            node: "state_manager".into(),
            ok: true,
        },
    );
    assert_eq!(reactivated(&out), vec!["cnc_1", "cnc_2"]);
    assert!(alerts(&out).iter().any(|a| a.1 == "epoch_fenced"));
    // Its transition event, heard after all: they are at it already.
    let out = c.step(
        2.01,
        Input::Activated {
            node: "state_manager".into(),
        },
    );
    assert!(reactivated(&out).is_empty(), "{out:?}");
}

#[test]
fn each_activation_of_the_state_manager_reactivates_the_active_cncs_for_a_new_epoch() {
    let cfg = Config {
        epoch_holders: names(&["cnc_1", "cnc_2"]),
        ..Config::default()
    };
    let all = names(&["state_manager", "tracker", "cnc_1", "cnc_2"]);
    let mut c = ManagerCore::new(cfg, &all);
    // At bring-up the CNCs come after the state manager: nothing to do.
    c.step(
        0.0,
        Input::Want {
            node: "state_manager".into(),
            active: true,
        },
    );
    let out = c.step(
        0.1,
        Input::Activated {
            node: "state_manager".into(),
        },
    );
    assert!(out.is_empty(), "{out:?}");
    for n in &all[1..] {
        c.step(
            1.0,
            Input::Want {
                node: n.clone(),
                active: true,
            },
        );
    }
    // Another node's activation means nothing; the state manager's again
    // (after a crash, a respawn, its own recovery) re-activates both CNCs.
    assert!(c
        .step(
            2.0,
            Input::Activated {
                node: "tracker".into()
            }
        )
        .is_empty());
    let out = c.step(
        2.0,
        Input::Activated {
            node: "state_manager".into(),
        },
    );
    let again: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Reactivate { node } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(again, vec!["cnc_1", "cnc_2"]);
    assert_eq!(alerts(&out)[0].1, "epoch_fenced");
    // Once each: not again while they are at it.
    let out = c.step(
        2.1,
        Input::Activated {
            node: "state_manager".into(),
        },
    );
    assert!(out.is_empty(), "{out:?}");
    c.step(
        2.5,
        Input::Recovered {
            node: "cnc_1".into(),
            ok: true,
        },
    );
    let out = c.step(
        3.0,
        Input::Activated {
            node: "state_manager".into(),
        },
    );
    assert_eq!(recovers(&out), vec![]);
    assert!(matches!(&out[1], Output::Reactivate { node } if node == "cnc_1"));
}
