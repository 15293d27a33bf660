//! The main job's report, from what a run heard: every object event, pick
//! result, alert and (in the simulated cell) truth event. Pure: the run
//! hands in the records, the report comes out as numbers, text and a plot.
//! The records come from the live topics or from a bag of them.

use crate::kit::time::seconds;
use crate::manager::metrics::state_id;
use crate::msgs::msg as m;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq)]
pub struct EventRec {
    pub seq: u64,
    pub object: [u8; 16],
    pub vision_id: String,
    pub to: u8,
    pub cnc: String,
    /// When the state manager accepted it, s.
    pub stamp_s: f64,
    /// The object's x on the belt then, m.
    pub belt_position_m: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PickRec {
    pub cnc: String,
    pub outcome: u8,
    pub cycle_time_s: f64,
    pub stamp_s: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TruthRec {
    pub sim_id: u64,
    /// TruthEvent kind.
    pub kind: u8,
    pub stamp_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRec {
    pub severity: u8,
    pub name: String,
    pub node: String,
    pub message: String,
    /// Seconds into the run.
    pub at_s: f64,
}

/// A stamped message and when it was heard, s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heard2 {
    /// Its header stamp: the exposure it describes.
    pub stamp_s: f64,
    pub heard_s: f64,
}

#[derive(Debug, Default, Clone)]
pub struct Heard {
    pub events: Vec<EventRec>,
    pub picks: Vec<PickRec>,
    pub truth: Vec<TruthRec>,
    pub alerts: Vec<AlertRec>,
    /// Every DetectionArray and TrackArray.
    pub detections: Vec<Heard2>,
    pub tracks: Vec<Heard2>,
    /// Each object's first TrackArray.
    pub first_tracked: HashMap<[u8; 16], Heard2>,
    /// Every Assignment (stamped with the exposure it rests on).
    pub assignments: Vec<([u8; 16], Heard2)>,
}

impl Heard {
    /// Files an object event (from `objects/events`).
    pub fn event(&mut self, e: m::ObjectEvent) {
        let Ok(object) = <[u8; 16]>::try_from(e.object_id.uuid.as_slice()) else {
            return;
        };
        self.events.push(EventRec {
            seq: e.seq,
            object,
            vision_id: e.vision_id,
            to: e.to_state.id,
            cnc: e.cnc_id,
            stamp_s: seconds(&e.header.stamp),
            belt_position_m: e.belt_position_m,
        });
    }

    /// Files a pick result (from `pick_results`).
    pub fn pick(&mut self, p: m::PickResult) {
        self.picks.push(PickRec {
            cnc: p.cnc_id,
            outcome: p.outcome.value,
            cycle_time_s: p.cycle_time_s,
            stamp_s: seconds(&p.header.stamp),
        })
    }

    /// Files an alert heard `at_s` into the run.
    pub fn alert(&mut self, a: m::Alert, at_s: f64) {
        self.alerts.push(AlertRec {
            severity: a.severity,
            name: a.name,
            node: a.node,
            message: a.message,
            at_s,
        })
    }

    /// Files a DetectionArray heard at `heard_s`.
    pub fn detections(&mut self, d: m::DetectionArray, heard_s: f64) {
        self.detections.push(Heard2 {
            stamp_s: seconds(&d.header.stamp),
            heard_s,
        });
    }

    /// Files a TrackArray heard at `heard_s`.
    pub fn tracks(&mut self, t: m::TrackArray, heard_s: f64) {
        let h = Heard2 {
            stamp_s: seconds(&t.header.stamp),
            heard_s,
        };
        self.tracks.push(h);
        for tr in &t.tracks {
            if let Ok(id) = <[u8; 16]>::try_from(tr.object_id.uuid.as_slice()) {
                self.first_tracked.entry(id).or_insert(h);
            }
        }
    }

    /// Files an Assignment heard at `heard_s`.
    pub fn assignment(&mut self, a: m::Assignment, heard_s: f64) {
        if let Ok(id) = <[u8; 16]>::try_from(a.object_id.uuid.as_slice()) {
            let stamp_s = seconds(&a.header.stamp);
            self.assignments.push((id, Heard2 { stamp_s, heard_s }));
        }
    }

    /// Files the simulator's truth (from `sim/truth`).
    pub fn truth(&mut self, t: m::Truth) {
        self.truth.extend(t.events.into_iter().map(|e| TruthRec {
            sim_id: e.sim_id,
            kind: e.kind,
            stamp_s: seconds(&e.stamp),
        }))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Percentiles {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut v: Vec<f64>) -> Self {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            n: v.len(),
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct CncRow {
    pub cnc_id: String,
    pub picked: u32,
    pub failed: u32,
    pub refused: u32,
    pub cycle_time_s: Percentiles,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct LaneRow {
    pub lane: u8,
    pub objects: u32,
    pub picked: u32,
    pub dropped: u32,
    pub missed: u32,
    pub bypassed: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct TruthCheck {
    pub arrived: u32,
    pub binned: u32,
    /// Simulated objects binned more than once (must be 0).
    pub binned_twice: u32,
    pub dropped: u32,
    pub fell_off: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Report {
    pub duration_s: f64,
    pub objects: u32,
    pub picked: u32,
    pub dropped: u32,
    pub missed: u32,
    pub bypassed: u32,
    /// Not yet terminal when the run stopped (on the belt, or being picked).
    pub in_flight: u32,
    /// Not terminal, and unchanged for longer than `stuck_after_s` at the end.
    pub stuck: u32,
    /// Objects that entered PICKING more than once (must be 0).
    pub picked_twice: u32,
    /// Gaps in the events' sequence numbers (events not heard).
    pub event_gaps: u64,
    pub success_rate: f64,
    pub miss_rate: f64,
    pub picks_per_min: f64,
    /// First exposure (the vision id's stamp) to registration.
    pub exposure_to_registered_ms: Percentiles,
    /// The pipeline, frame by frame: an exposure to its DetectionArray, and
    /// to its TrackArray, heard by the run; an exposure to the Assignment
    /// that rests on it (assignments are stamped with the exposure of the
    /// frame that decided them, and published once the store took them).
    pub exposure_to_detections_ms: Percentiles,
    pub exposure_to_tracks_ms: Percentiles,
    pub exposure_to_assignment_ms: Percentiles,
    /// The same assignments split where the scheduler asked the store for
    /// ASSIGNED (the event's stamp): the exposure to the decision, and the
    /// store's compare-and-set to the Assignment heard.
    pub exposure_to_decision_ms: Percentiles,
    pub decision_to_assignment_ms: Percentiles,
    /// The first assignment to the CNC accepting the goal (PICKING).
    pub assigned_to_goal_accepted_s: Percentiles,
    /// Registration to the first assignment.
    pub registered_to_assigned_s: Percentiles,
    pub cycle_time_s: Percentiles,
    pub cncs: Vec<CncRow>,
    pub lanes: Vec<LaneRow>,
    pub truth: Option<TruthCheck>,
    pub alerts: Vec<AlertRec>,
    pub restarts: BTreeMap<String, u32>,
}

/// One object's way through the cell: when each stage first heard of it,
/// in seconds after its first exposure (the vision id's stamp).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    pub object_id: String,
    pub vision_id: String,
    pub exposure_s: f64,
    /// Its first frame's DetectionArray heard.
    pub detections_s: Option<f64>,
    /// Its first TrackArray heard.
    pub tracked_s: Option<f64>,
    pub registered_s: Option<f64>,
    /// Its first Assignment heard.
    pub assigned_s: Option<f64>,
    /// That Assignment's age when heard: ms after the exposure it rests on
    /// (its stamp), as `exposure_to_assignment_ms` counts it.
    pub assignment_age_ms: Option<f64>,
    /// The CNC took the pick goal (PICKING).
    pub goal_accepted_s: Option<f64>,
    /// The state it ended in (or was in at the end).
    pub last_state: u8,
}

/// Every registered object's trace, in order of first exposure.
pub fn traces(heard: &Heard) -> Vec<Trace> {
    // Detections by their stamp in whole ms (a vision id's resolution).
    let mut dets: HashMap<i64, f64> = HashMap::new();
    for d in &heard.detections {
        dets.entry((d.stamp_s * 1000.0).round() as i64)
            .or_insert(d.heard_s);
    }
    let mut assigned: HashMap<[u8; 16], Heard2> = HashMap::new();
    for (id, h) in &heard.assignments {
        assigned.entry(*id).or_insert(*h);
    }
    let mut events = heard.events.clone();
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    let mut out: Vec<Trace> = Vec::new();
    let mut at: HashMap<[u8; 16], usize> = HashMap::new();
    for e in &events {
        let i = match at.get(&e.object) {
            Some(i) => *i,
            None => {
                let Some((x, _)) = parse_vision_id(&e.vision_id) else {
                    continue;
                };
                let after = |t: Option<f64>| t.map(|t| t - x);
                out.push(Trace {
                    object_id: uuid::Uuid::from_bytes(e.object).to_string(),
                    vision_id: e.vision_id.clone(),
                    exposure_s: x,
                    detections_s: after(dets.get(&((x * 1000.0).round() as i64)).copied()),
                    tracked_s: after(heard.first_tracked.get(&e.object).map(|h| h.heard_s)),
                    registered_s: None,
                    assigned_s: after(assigned.get(&e.object).map(|h| h.heard_s)),
                    assignment_age_ms: assigned
                        .get(&e.object)
                        .map(|h| (h.heard_s - h.stamp_s) * 1000.0),
                    goal_accepted_s: None,
                    last_state: e.to,
                });
                at.insert(e.object, out.len() - 1);
                out.len() - 1
            }
        };
        let t = &mut out[i];
        let since = e.stamp_s - t.exposure_s;
        match e.to {
            state_id::DETECTED => {
                t.registered_s.get_or_insert(since);
            }
            PICKING => {
                t.goal_accepted_s.get_or_insert(since);
            }
            _ => {}
        }
        t.last_state = e.to;
    }
    out.sort_by(|a, b| a.exposure_s.total_cmp(&b.exposure_s));
    out
}

/// Traces as CSV, one object a row (empty where a stage never came).
pub fn traces_csv(traces: &[Trace]) -> String {
    use std::fmt::Write;
    let mut s = String::from(
        "object_id,vision_id,exposure_s,detections_s,tracked_s,registered_s,assigned_s,assignment_age_ms,goal_accepted_s,last_state\n",
    );
    let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for t in traces {
        let _ = writeln!(
            s,
            "{},{},{:.6},{},{},{},{},{},{},{}",
            t.object_id,
            t.vision_id,
            t.exposure_s,
            f(t.detections_s),
            f(t.tracked_s),
            f(t.registered_s),
            f(t.assigned_s),
            f(t.assignment_age_ms),
            f(t.goal_accepted_s),
            t.last_state
        );
    }
    s
}

/// `vision_{stamp_ms}_{lane}_{n}` → (stamp s, lane).
pub fn parse_vision_id(v: &str) -> Option<(f64, u8)> {
    let mut it = v.strip_prefix("vision_")?.split('_');
    let ms: f64 = it.next()?.parse().ok()?;
    let lane: u8 = it.next()?.parse().ok()?;
    Some((ms / 1000.0, lane))
}

const PICKING: u8 = 3;
const ASSIGNED: u8 = 2;

impl Report {
    /// The report of a run of `duration_s` that ended at `end_s` (the
    /// events' clock), over `lanes` lanes.
    pub fn of(
        heard: &Heard,
        duration_s: f64,
        end_s: f64,
        lanes: u8,
        stuck_after_s: f64,
        sim: bool,
    ) -> Report {
        struct Obj {
            lane: Option<u8>,
            exposure_s: Option<f64>,
            registered_s: Option<f64>,
            assigned_s: Option<f64>,
            accepted_s: Option<f64>,
            last: u8,
            last_s: f64,
            picking: u32,
        }
        let mut objs: HashMap<[u8; 16], Obj> = HashMap::new();
        let mut events = heard.events.clone();
        // A restarted state manager publishes its recent events again
        // (transient local): the same seq is the same event.
        events.sort_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        let mut r = Report {
            duration_s,
            ..Report::default()
        };
        let mut prev: Option<u64> = None;
        for e in &events {
            if let Some(p) = prev {
                r.event_gaps += e.seq.saturating_sub(p + 1);
            }
            prev = Some(e.seq);
            let parsed = parse_vision_id(&e.vision_id);
            let o = objs.entry(e.object).or_insert(Obj {
                lane: parsed.map(|p| p.1),
                exposure_s: parsed.map(|p| p.0),
                registered_s: None,
                assigned_s: None,
                accepted_s: None,
                last: 0,
                last_s: e.stamp_s,
                picking: 0,
            });
            match e.to {
                state_id::DETECTED if o.registered_s.is_none() => o.registered_s = Some(e.stamp_s),
                ASSIGNED if o.assigned_s.is_none() => o.assigned_s = Some(e.stamp_s),
                PICKING => {
                    o.picking += 1;
                    o.accepted_s.get_or_insert(e.stamp_s);
                }
                _ => {}
            }
            o.last = e.to;
            o.last_s = e.stamp_s;
        }
        let mut lane_rows: Vec<LaneRow> = (0..lanes)
            .map(|l| LaneRow {
                lane: l,
                ..LaneRow::default()
            })
            .collect();
        let (mut exp, mut assign, mut accept) = (Vec::new(), Vec::new(), Vec::new());
        for o in objs.values() {
            r.objects += 1;
            let row = o.lane.and_then(|l| lane_rows.get_mut(l as usize));
            let counter = match o.last {
                state_id::PICKED => Some(&mut r.picked),
                state_id::DROPPED => Some(&mut r.dropped),
                state_id::MISSED => Some(&mut r.missed),
                state_id::BYPASSED => Some(&mut r.bypassed),
                _ => None,
            };
            match counter {
                Some(c) => *c += 1,
                None => {
                    r.in_flight += 1;
                    if end_s - o.last_s > stuck_after_s {
                        r.stuck += 1;
                    }
                }
            }
            if let Some(row) = row {
                row.objects += 1;
                match o.last {
                    state_id::PICKED => row.picked += 1,
                    state_id::DROPPED => row.dropped += 1,
                    state_id::MISSED => row.missed += 1,
                    state_id::BYPASSED => row.bypassed += 1,
                    _ => {}
                }
            }
            if o.picking > 1 {
                r.picked_twice += 1;
            }
            if let (Some(x), Some(g)) = (o.exposure_s, o.registered_s) {
                exp.push((g - x) * 1000.0);
            }
            if let (Some(g), Some(a)) = (o.registered_s, o.assigned_s) {
                assign.push(a - g);
            }
            if let (Some(a), Some(k)) = (o.assigned_s, o.accepted_s) {
                accept.push(k - a);
            }
        }
        let wanted = (r.picked + r.dropped + r.missed) as f64;
        if wanted > 0.0 {
            r.success_rate = r.picked as f64 / wanted;
            r.miss_rate = r.missed as f64 / wanted;
        }
        if duration_s > 0.0 {
            r.picks_per_min = r.picked as f64 * 60.0 / duration_s;
        }
        r.exposure_to_registered_ms = Percentiles::of(exp);
        r.registered_to_assigned_s = Percentiles::of(assign);
        r.assigned_to_goal_accepted_s = Percentiles::of(accept);
        let age_ms = |v: &mut dyn Iterator<Item = &Heard2>| {
            Percentiles::of(v.map(|h| (h.heard_s - h.stamp_s) * 1000.0).collect())
        };
        r.exposure_to_detections_ms = age_ms(&mut heard.detections.iter());
        r.exposure_to_tracks_ms = age_ms(&mut heard.tracks.iter());
        r.exposure_to_assignment_ms = age_ms(&mut heard.assignments.iter().map(|(_, h)| h));
        let mut first: HashMap<[u8; 16], Heard2> = HashMap::new();
        for (id, h) in &heard.assignments {
            first.entry(*id).or_insert(*h);
        }
        let (mut decided, mut stored) = (Vec::new(), Vec::new());
        for (id, o) in &objs {
            if let (Some(asked_s), Some(h)) = (o.assigned_s, first.get(id)) {
                decided.push((asked_s - h.stamp_s) * 1000.0);
                stored.push((h.heard_s - asked_s) * 1000.0);
            }
        }
        r.exposure_to_decision_ms = Percentiles::of(decided);
        r.decision_to_assignment_ms = Percentiles::of(stored);
        r.lanes = lane_rows;
        let mut cncs: BTreeMap<String, (CncRow, Vec<f64>)> = BTreeMap::new();
        for p in &heard.picks {
            let (row, cycles) = cncs.entry(p.cnc.clone()).or_insert_with(|| {
                (
                    CncRow {
                        cnc_id: p.cnc.clone(),
                        ..CncRow::default()
                    },
                    Vec::new(),
                )
            });
            match p.outcome {
                0 => {
                    row.picked += 1;
                    cycles.push(p.cycle_time_s);
                }
                4 => row.refused += 1,
                _ => row.failed += 1,
            }
        }
        r.cycle_time_s = Percentiles::of(
            heard
                .picks
                .iter()
                .filter(|p| p.outcome == 0)
                .map(|p| p.cycle_time_s)
                .collect(),
        );
        r.cncs = cncs
            .into_values()
            .map(|(mut row, cycles)| {
                row.cycle_time_s = Percentiles::of(cycles);
                row
            })
            .collect();
        if sim {
            let mut t = TruthCheck::default();
            let mut binned: HashMap<u64, u32> = HashMap::new();
            for e in &heard.truth {
                match e.kind {
                    0 => t.arrived += 1,
                    2 => *binned.entry(e.sim_id).or_default() += 1,
                    3 => t.dropped += 1,
                    5 => t.fell_off += 1,
                    _ => {}
                }
            }
            t.binned = binned.values().sum();
            t.binned_twice = binned.values().filter(|n| **n > 1).count() as u32;
            r.truth = Some(t);
        }
        r.alerts = heard.alerts.clone();
        r
    }

    /// Whether the run kept the cell's promises: nothing picked twice, and
    /// nothing stuck.
    pub fn invariants_hold(&self) -> bool {
        self.picked_twice == 0
            && self.stuck == 0
            && self.truth.as_ref().is_none_or(|t| t.binned_twice == 0)
    }

    /// The report as text for the terminal.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let pct = |p: &Percentiles, unit: &str| {
            if p.n == 0 {
                "none".to_string()
            } else {
                format!(
                    "p50 {:.3} {unit}, p95 {:.3} {unit}, p99 {:.3} {unit}, max {:.3} {unit} (n {})",
                    p.p50, p.p95, p.p99, p.max, p.n
                )
            }
        };
        let _ = writeln!(s, "cncpick: report of a {:.0} s run", self.duration_s);
        let _ = writeln!(
            s,
            "  objects {}: picked {}, dropped {}, missed {}, bypassed {}, in flight at the end {}",
            self.objects, self.picked, self.dropped, self.missed, self.bypassed, self.in_flight
        );
        let _ = writeln!(
            s,
            "  success rate {:.3} (picked / (picked + dropped + missed)), miss rate {:.3}, {:.1} picks/min",
            self.success_rate, self.miss_rate, self.picks_per_min
        );
        let _ = writeln!(
            s,
            "  invariants: picked twice {}, stuck {}, event gaps {}{}",
            self.picked_twice,
            self.stuck,
            self.event_gaps,
            self.truth.as_ref().map_or(String::new(), |t| format!(
                ", binned twice (sim truth) {}",
                t.binned_twice
            ))
        );
        let _ = writeln!(s, "  latency:");
        let _ = writeln!(
            s,
            "    exposure -> registered  {}",
            pct(&self.exposure_to_registered_ms, "ms")
        );
        let _ = writeln!(
            s,
            "    registered -> assigned  {}",
            pct(&self.registered_to_assigned_s, "s")
        );
        let _ = writeln!(
            s,
            "    assigned -> goal accepted {}",
            pct(&self.assigned_to_goal_accepted_s, "s")
        );
        let _ = writeln!(s, "    pipeline, an exposure to what rests on it:");
        for (what, p) in [
            ("detections", &self.exposure_to_detections_ms),
            ("tracks    ", &self.exposure_to_tracks_ms),
            ("assignment", &self.exposure_to_assignment_ms),
            ("  decision", &self.exposure_to_decision_ms),
            ("  + store ", &self.decision_to_assignment_ms),
        ] {
            let _ = writeln!(s, "      {what}  {}", pct(p, "ms"));
        }
        let _ = writeln!(
            s,
            "    pick cycle              {}",
            pct(&self.cycle_time_s, "s")
        );
        let _ = writeln!(s, "  per CNC:");
        let _ = writeln!(s, "    cnc   picked  failed  refused  cycle p50 s");
        for c in &self.cncs {
            let _ = writeln!(
                s,
                "    {:<5} {:>6}  {:>6}  {:>7}  {:>11.3}",
                c.cnc_id, c.picked, c.failed, c.refused, c.cycle_time_s.p50
            );
        }
        let _ = writeln!(s, "  per lane:");
        let _ = writeln!(s, "    lane  objects  picked  dropped  missed  bypassed");
        for l in &self.lanes {
            let _ = writeln!(
                s,
                "    {:<4}  {:>7}  {:>6}  {:>7}  {:>6}  {:>8}",
                l.lane, l.objects, l.picked, l.dropped, l.missed, l.bypassed
            );
        }
        if let Some(t) = &self.truth {
            let _ = writeln!(
                s,
                "  sim truth: arrived {}, binned {}, dropped {}, fell off {}",
                t.arrived, t.binned, t.dropped, t.fell_off
            );
        }
        let mut by_name: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        for a in &self.alerts {
            *by_name
                .entry((a.name.as_str(), a.node.as_str()))
                .or_default() += 1;
        }
        let _ = writeln!(s, "  alerts: {}", self.alerts.len());
        for ((name, node), n) in by_name {
            let _ = writeln!(s, "    {name} {node}: {n}");
        }
        if !self.restarts.is_empty() {
            let _ = writeln!(s, "  node restarts: {:?}", self.restarts);
        }
        s
    }
}

/// Picks and misses per lane over time (`bin_s` bins), as an HTML page
/// holding an SVG chart.
pub fn plot_html(heard: &Heard, start_s: f64, duration_s: f64, lanes: u8, bin_s: f64) -> String {
    use plotters::prelude::*;
    let bins = ((duration_s / bin_s).ceil() as usize).max(1);
    let mut picks = vec![vec![0u32; bins]; lanes as usize];
    let mut misses = vec![vec![0u32; bins]; lanes as usize];
    for e in &heard.events {
        let Some((_, lane)) = parse_vision_id(&e.vision_id) else {
            continue;
        };
        let i = ((e.stamp_s - start_s) / bin_s).floor();
        if !(0.0..bins as f64).contains(&i) || lane as usize >= lanes as usize {
            continue;
        }
        match e.to {
            state_id::PICKED => picks[lane as usize][i as usize] += 1,
            state_id::MISSED | state_id::DROPPED => misses[lane as usize][i as usize] += 1,
            _ => {}
        }
    }
    let top = picks
        .iter()
        .chain(misses.iter())
        .flat_map(|v| v.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let chart = ChartBuilder::on(&root)
            .caption(
                format!("picks (solid) and misses (dashed) per lane, per {bin_s:.0} s"),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..duration_s, 0u32..top + 1);
        if let Ok(mut chart) = chart {
            let _ = chart
                .configure_mesh()
                .x_desc("time into the run, s")
                .y_desc("objects")
                .draw();
            for l in 0..lanes as usize {
                let color = Palette99::pick(l).to_rgba();
                let xs = |i: usize| i as f64 * bin_s + bin_s / 2.0;
                let _ = chart
                    .draw_series(LineSeries::new(
                        picks[l].iter().enumerate().map(|(i, v)| (xs(i), *v)),
                        color.stroke_width(2),
                    ))
                    .map(|s| {
                        s.label(format!("lane {l}")).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color)
                        })
                    });
                let _ = chart.draw_series(DashedLineSeries::new(
                    misses[l].iter().enumerate().map(|(i, v)| (xs(i), *v)),
                    6,
                    4,
                    color.stroke_width(1),
                ));
            }
            let _ = chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw();
        }
        let _ = root.present();
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>cncpick run</title></head>\n<body>\n{svg}\n</body></html>\n"
    )
}
