//! Chaos runs (`cncpick chaos`): the simulated cell, one process per node,
//! with faults injected at random times drawn from a seed, and the promise
//! to a factory checked at the end against the state manager's events and
//! the simulator's truth: every object reaches exactly one terminal state,
//! nothing is picked twice, nothing is lost, no machine leaves its soft
//! limits, nothing stays unfinished past its timeouts; and how long the
//! cell took to be whole again after each fault.
//!
//! The pure parts (the plan, the health timeline, recovery times, the
//! matching of truth to registrations) are here with their tests; the
//! injector and its observers are the thin shell at the end.

use super::report::{EventRec, Percentiles};
use crate::manager::metrics::state_id;
use crate::sim::rng::stream;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Every kind of fault a chaos run injects.
pub const KINDS: &[&str] = &[
    "kill_state_manager",
    "kill_camera",
    "kill_detector",
    "kill_tracker",
    "kill_scheduler",
    "kill_cnc",
    "grbl_alarm",
    "disconnect",
    "garbage",
    "vacuum_failure",
    "frame_drop",
    "dds_drop",
    "dds_delay",
    "disk_full",
    "bad_param",
];

/// The kinds the simulator injects (told on `sim/inject_fault`); the
/// runner injects the rest itself.
pub const SIM_KINDS: &[&str] = &[
    "grbl_alarm",
    "disconnect",
    "garbage",
    "vacuum_failure",
    "frame_drop",
];

/// The topic the lossy link sits on: the detector's output, relayed to the
/// tracker (which reads `LINK_TOPIC`).
pub const LINK_FROM: &str = "detections";
pub const LINK_TOPIC: &str = "chaos/detections";

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    #[command(flatten)]
    pub run: super::run::RunArgs,
    /// The seed of the fault plan (the world's own seed is sim.seed).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Faults per minute over the chaos window.
    #[arg(long, default_value_t = 4.0)]
    pub faults_per_min: f64,
    /// The kinds to draw from, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// No faults in the first seconds after the cell is up.
    #[arg(long, default_value_t = 10.0)]
    pub warmup_s: f64,
    /// No faults in the last seconds, so every object can finish.
    #[arg(long, default_value_t = 40.0)]
    pub drain_s: f64,
}

/// One fault of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// Seconds after the cell is up.
    pub at_s: f64,
    pub kind: String,
    /// The node, CNC id or topic it hits ("" for the camera's frames).
    pub target: String,
    /// How long the cause lasts (0 for instant faults).
    pub for_s: f64,
    /// The kind's one number: drop probability, delay (ms), bytes, alarm code.
    pub amount: f64,
}

impl Fault {
    pub fn in_sim(&self) -> bool {
        SIM_KINDS.contains(&self.kind.as_str())
    }

    /// What the simulator is sent on `sim/inject_fault` (its `faults`
    /// parameter's syntax, without the time).
    pub fn sim_entry(&self) -> Option<String> {
        let (cnc, for_s) = (&self.target, self.for_s);
        Some(match self.kind.as_str() {
            "grbl_alarm" => format!("grbl_alarm cnc={cnc} code={}", self.amount),
            "disconnect" => format!("disconnect cnc={cnc} for_s={for_s:.3}"),
            "garbage" => format!("garbage cnc={cnc} bytes={}", self.amount),
            "vacuum_failure" => format!("vacuum_failure cnc={cnc} for_s={for_s:.3}"),
            "frame_drop" => format!("frame_drop for_s={for_s:.3}"),
            _ => return None,
        })
    }
}

/// A parameter update every node must refuse, and why it is bad.
pub const BAD_PARAMS: &[(&str, &str, BadValue)] = &[
    ("scheduler", "queue_max", BadValue::Integer(99)),
    ("scheduler", "policy", BadValue::Text("fastest")),
    ("tracker", "speed_period_s", BadValue::Double(-1.0)),
    ("camera", "frame_timeout_s", BadValue::Text("soon")),
    ("state_manager", "size_limit_mb", BadValue::Double(-5.0)),
    ("cnc", "travel_mm", BadValue::Text("far")),
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BadValue {
    Integer(i64),
    Double(f64),
    Text(&'static str),
}

/// The faults of a run: `per_min` a minute between `from_s` and `to_s`,
/// one in each equal slot at a random point of its first half (so two
/// faults are at least half a slot apart), kinds in shuffled rounds of
/// `kinds` so every kind comes up, targets drawn among `nodes` and
/// `cnc_ids`. The same arguments give the same plan.
pub fn plan(
    seed: u64,
    from_s: f64,
    to_s: f64,
    per_min: f64,
    kinds: &[String],
    nodes: &[String],
    cnc_ids: &[String],
) -> Vec<Fault> {
    let mut rng = stream(seed, "chaos");
    let kinds: Vec<&String> = kinds
        .iter()
        .filter(|k| match k.strip_prefix("kill_") {
            Some("cnc") => !cnc_ids.is_empty(),
            Some(node) => nodes.iter().any(|n| n == node),
            None => !(is_cnc_kind(k) && cnc_ids.is_empty()),
        })
        .collect();
    let span = to_s - from_s;
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if kinds.is_empty() || !positive(span) || !positive(per_min) {
        return Vec::new();
    }
    let n = ((per_min * span / 60.0).round() as usize).max(1);
    let slot = span / n as f64;
    let mut round: Vec<&String> = Vec::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if round.is_empty() {
            round = kinds.clone();
            round.shuffle(&mut rng);
        }
        let kind = round.pop().expect("refilled above").clone();
        let at_s = from_s + i as f64 * slot + rng.random_range(0.0..0.5) * slot;
        let cnc = if cnc_ids.is_empty() {
            String::new()
        } else {
            cnc_ids[rng.random_range(0..cnc_ids.len())].clone()
        };
        let (target, for_s, amount) = match kind.as_str() {
            "kill_cnc" => (format!("cnc_{cnc}"), 0.0, 0.0),
            k if k.starts_with("kill_") => (k["kill_".len()..].to_string(), 0.0, 0.0),
            "grbl_alarm" => (cnc, 0.0, rng.random_range(1..=3) as f64),
            "disconnect" => (cnc, rng.random_range(1.0..4.0), 0.0),
            "garbage" => (cnc, 0.0, rng.random_range(8..256) as f64),
            "vacuum_failure" => (cnc, rng.random_range(2.0..6.0), 0.0),
            "frame_drop" => (String::new(), rng.random_range(0.5..3.0), 0.0),
            "dds_drop" => (LINK_FROM.into(), rng.random_range(2.0..5.0), 0.5),
            "dds_delay" => (
                LINK_FROM.into(),
                rng.random_range(2.0..5.0),
                rng.random_range(50.0..300.0),
            ),
            "disk_full" => ("state_manager".into(), rng.random_range(2.0..5.0), 0.0),
            "bad_param" => {
                let k = rng.random_range(0..BAD_PARAMS.len());
                let node = match BAD_PARAMS[k].0 {
                    "cnc" => format!("cnc_{cnc}"),
                    n => n.to_string(),
                };
                (node, 0.0, k as f64)
            }
            _ => (String::new(), 0.0, 0.0),
        };
        out.push(Fault {
            at_s,
            kind,
            target,
            for_s,
            amount,
        });
    }
    out
}

fn is_cnc_kind(k: &str) -> bool {
    matches!(
        k,
        "grbl_alarm" | "disconnect" | "garbage" | "vacuum_failure"
    )
}

/// A chaos run's plan for the cell `spec`, running `duration_s`, and the
/// parameters it lays over the cell's (`node.name:=value`): the tracker
/// reads the lossy link, and the CNCs home. An alarm (or a reset in
/// motion) leaves GRBL locked with its position lost, which only homing
/// clears without an operator; so the chaos cell homes, as a production
/// cell does (`params/cell.yaml`), and its manager gives a CNC its homing
/// time before reconfiguring it.
pub fn prepare(
    c: &ChaosArgs,
    spec: &super::spec::CellSpec,
    duration_s: f64,
) -> anyhow::Result<(Vec<Fault>, Vec<String>)> {
    anyhow::ensure!(
        spec.sim,
        "a chaos run needs the simulated cell (a params file with a sim section)"
    );
    let kinds = check_kinds(&c.kinds).map_err(anyhow::Error::msg)?;
    for (name, v) in [
        ("--faults-per-min", c.faults_per_min),
        ("--warmup-s", c.warmup_s),
        ("--drain-s", c.drain_s),
    ] {
        anyhow::ensure!(
            v.is_finite() && v >= 0.0,
            "{name} must be a number ≥ 0, got {v}"
        );
    }
    let plan = plan(
        c.seed,
        c.warmup_s,
        duration_s - c.drain_s,
        c.faults_per_min,
        &kinds,
        &spec.node_names(),
        &spec.cnc_ids,
    );
    let mut params = vec![
        format!("tracker.detections_topic:={LINK_TOPIC}"),
        "sim.cnc_homing:=true".to_string(),
        "manager.recover_grace_s:=35.0".to_string(),
    ];
    params.extend(
        spec.cnc_ids
            .iter()
            .map(|id| format!("cnc_{id}.homing:=true")),
    );
    Ok((plan, params))
}

/// Checks `--kinds`; an unknown one is named.
pub fn check_kinds(kinds: &[String]) -> Result<Vec<String>, String> {
    if kinds.is_empty() {
        return Ok(KINDS.iter().map(|k| k.to_string()).collect());
    }
    for k in kinds {
        if !KINDS.contains(&k.as_str()) {
            return Err(format!(
                "--kinds: {k:?} is not a kind of fault; use some of {}",
                KINDS.join(", ")
            ));
        }
    }
    Ok(kinds.to_vec())
}

/// Whether each node is well, over time, from the heartbeats: a node is
/// degraded while its latest heartbeat says it is not active, or it has
/// been silent for longer than `silent_after_s` (from when its next beat
/// was due, not from when that is noticed).
#[derive(Debug, Clone)]
pub struct Health {
    silent_after_s: f64,
    /// node → (last heard, active, degraded since)
    nodes: BTreeMap<String, (Option<f64>, bool, Option<f64>)>,
    /// Closed degradations of one node each.
    pub intervals: Vec<Interval>,
}

/// One node's degradation, [from, to); `open` if it had not ended when
/// the run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub node: String,
    pub from: f64,
    pub to: f64,
    pub open: bool,
}

impl Health {
    /// Nodes start degraded (not yet heard) from `t0_s`.
    pub fn new(nodes: &[String], silent_after_s: f64, t0_s: f64) -> Self {
        Health {
            silent_after_s,
            nodes: nodes
                .iter()
                .map(|n| (n.clone(), (None, false, Some(t0_s))))
                .collect(),
            intervals: Vec::new(),
        }
    }

    /// A heartbeat of `node` at `t_s`.
    pub fn beat(&mut self, node: &str, active: bool, t_s: f64) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.0 = Some(t_s);
            n.1 = active;
        }
        self.tick(t_s);
    }

    /// `node` is known to be down from `t_s` (its process was killed then),
    /// ahead of its silence being noticed.
    pub fn down(&mut self, node: &str, t_s: f64) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.1 = false;
            if n.2.is_none() {
                n.2 = Some(t_s);
            }
        }
    }

    /// Re-evaluates at `t_s` (silence needs no message to be noticed).
    pub fn tick(&mut self, t_s: f64) {
        for (name, (heard, active, since)) in self.nodes.iter_mut() {
            let silent = heard.is_none_or(|h| t_s - h > self.silent_after_s);
            match (*active && !silent, *since) {
                (false, None) => {
                    *since = Some(match heard {
                        Some(h) if *active => (*h + self.silent_after_s).min(t_s),
                        _ => t_s,
                    })
                }
                (true, Some(from)) => {
                    self.intervals.push(Interval {
                        node: name.clone(),
                        from,
                        to: t_s,
                        open: false,
                    });
                    *since = None;
                }
                _ => {}
            }
        }
    }

    /// Every degradation, those still under way closed at `end_s` (open).
    pub fn finish(&self, end_s: f64) -> Vec<Interval> {
        let mut v = self.intervals.clone();
        for (name, (_, _, since)) in &self.nodes {
            if let Some(from) = since {
                v.push(Interval {
                    node: name.clone(),
                    from: *from,
                    to: end_s,
                    open: true,
                });
            }
        }
        v.sort_by(|a, b| a.from.total_cmp(&b.from));
        v
    }
}

/// How long after its cause ended (`end_s`) the cell was whole again from
/// a fault injected at `at_s`: the end of the last node degradation that
/// began between the fault and `grace_s` after its end (a degradation
/// already under way is an earlier fault's). 0 when it caused none; None
/// when one of them had not ended when the run did.
pub fn recovery_s(at_s: f64, end_s: f64, grace_s: f64, intervals: &[Interval]) -> Option<f64> {
    let mine: Vec<&Interval> = intervals
        .iter()
        .filter(|i| i.from >= at_s && i.from <= end_s + grace_s)
        .collect();
    if mine.iter().any(|i| i.open) {
        return None;
    }
    Some(mine.iter().map(|i| i.to - end_s).fold(0.0, f64::max))
}

/// A simulated object's life, from the truth.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthLife {
    pub sim_id: u64,
    pub lane: u32,
    pub arrived_s: f64,
    /// When it left the belt for good (binned, dropped, fell off).
    pub gone_s: Option<f64>,
}

/// A simulated object the cell never registered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lost {
    pub sim_id: u64,
    pub lane: u32,
    /// When it arrived on the belt and left it, s into the run.
    pub arrived_s: f64,
    pub gone_s: f64,
}

/// Where the simulated objects were at one moment: (sim id, lane, x m).
pub type TruthFrame = (f64, Vec<(u64, u32, f64)>);

/// The simulated objects the cell should have known and never registered:
/// those that arrived after `from_s` and left the belt before `to_s`,
/// with no registration (a DETECTED event: its first exposure, lane and
/// belt x) for which it is the nearest object in its lane, within
/// `tolerance_m`, in the truth frame nearest that exposure.
pub fn lost(
    lives: &[TruthLife],
    frames: &[TruthFrame],
    registrations: &[(f64, u8, f64)],
    from_s: f64,
    to_s: f64,
    tolerance_m: f64,
) -> Vec<u64> {
    let mut seen: std::collections::HashSet<u64> = Default::default();
    for &(t, lane, x) in registrations {
        let i = frames.partition_point(|f| f.0 < t);
        let near = [i.checked_sub(1), Some(i)]
            .into_iter()
            .flatten()
            .filter_map(|k| frames.get(k))
            .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()));
        let Some((_, objs)) = near else { continue };
        if let Some(o) = objs
            .iter()
            .filter(|o| o.1 == lane as u32 && (o.2 - x).abs() <= tolerance_m)
            .min_by(|a, b| (a.2 - x).abs().total_cmp(&(b.2 - x).abs()))
        {
            seen.insert(o.0);
        }
    }
    lives
        .iter()
        .filter(|l| l.arrived_s >= from_s && l.gone_s.is_some_and(|g| g <= to_s))
        .filter(|l| !seen.contains(&l.sim_id))
        .map(|l| l.sim_id)
        .collect()
}

/// Whether the intervals `down` (in any order, overlapping) cover all of
/// [`from`, `to`].
pub fn covered(from: f64, to: f64, down: &[(f64, f64)]) -> bool {
    let mut v: Vec<(f64, f64)> = down.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut reach = from;
    for (a, b) in v {
        if a > reach {
            break;
        }
        reach = reach.max(b);
        if reach >= to {
            return true;
        }
    }
    reach >= to
}

/// When object `sim_id` was in the camera's view (`view_m`, belt x), from
/// the truth frames: (first, last) frame time, None if never.
pub fn in_view(frames: &[TruthFrame], sim_id: u64, view_m: (f64, f64)) -> Option<(f64, f64)> {
    let times: Vec<f64> = frames
        .iter()
        .filter(|(_, objs)| {
            objs.iter()
                .any(|o| o.0 == sim_id && o.2 >= view_m.0 && o.2 <= view_m.1)
        })
        .map(|f| f.0)
        .collect();
    Some((*times.first()?, *times.last()?))
}

/// Objects that reached a terminal state more than once, or left one
/// (the events deduplicated by seq).
pub fn terminal_twice(events: &[EventRec]) -> u32 {
    let mut by: HashMap<[u8; 16], (u32, bool)> = HashMap::new();
    let mut evs: Vec<&EventRec> = events.iter().collect();
    evs.sort_by_key(|e| e.seq);
    evs.dedup_by_key(|e| e.seq);
    let mut bad: std::collections::HashSet<[u8; 16]> = Default::default();
    for e in evs {
        let (terminals, ended) = by.entry(e.object).or_insert((0, false));
        if *ended {
            bad.insert(e.object);
        }
        if is_terminal(e.to) {
            *terminals += 1;
            *ended = true;
        }
    }
    bad.len() as u32
}

pub fn is_terminal(state: u8) -> bool {
    matches!(
        state,
        state_id::PICKED | state_id::DROPPED | state_id::MISSED | state_id::BYPASSED
    )
}

/// A machine position outside its soft limits ([-travel, 0] mm per axis).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutOfLimits {
    pub cnc_id: String,
    pub position_mm: [f64; 3],
    pub at_s: f64,
}

/// Checks one reported machine position against the travel.
pub fn within_travel(position_mm: [f64; 3], travel_mm: [f64; 3], tolerance_mm: f64) -> bool {
    (0..3).all(|a| position_mm[a] <= tolerance_mm && position_mm[a] >= -travel_mm[a] - tolerance_mm)
}

/// Resident memory of one process (by node name) at one moment.
pub type RssSample = (f64, BTreeMap<String, (u32, u64)>);

/// Memory over a run: every process's resident set at `from_s` (after
/// warm-up) and at the end, summed over the processes that ran throughout
/// (a restarted process starts again small, which would hide growth).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RssGrowth {
    pub from_s: f64,
    pub to_s: f64,
    pub start_kb: u64,
    pub end_kb: u64,
    pub max_kb: u64,
    pub growth_pct: f64,
    /// node → (start kB, end kB), for processes that ran throughout.
    pub per_process: BTreeMap<String, (u64, u64)>,
    /// The same processes about once a minute from `from_s` on: (s into
    /// the run, node → kB), to tell a plateau from a leak.
    pub per_minute: Vec<(f64, BTreeMap<String, u64>)>,
}

/// How far apart the kept samples of [`RssGrowth::per_minute`] are, s.
const SERIES_EVERY_S: f64 = 60.0;

/// The growth between the first sample at or after `from_s` and the last.
pub fn rss_growth(samples: &[RssSample], from_s: f64) -> Option<RssGrowth> {
    let first = samples.iter().find(|s| s.0 >= from_s)?;
    let last = samples.last()?;
    let mut g = RssGrowth {
        from_s: first.0,
        to_s: last.0,
        ..RssGrowth::default()
    };
    for (name, (pid, kb)) in &first.1 {
        if let Some((pid2, kb2)) = last.1.get(name) {
            if pid == pid2 {
                g.start_kb += kb;
                g.end_kb += kb2;
                g.per_process.insert(name.clone(), (*kb, *kb2));
            }
        }
    }
    g.max_kb = samples
        .iter()
        .filter(|s| s.0 >= first.0)
        .map(|s| {
            s.1.iter()
                .filter(|(n, (pid, _))| g.per_process.contains_key(*n) && first.1[*n].0 == *pid)
                .map(|(_, (_, kb))| kb)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0);
    let mut next_s = first.0;
    for (t, procs) in samples.iter().filter(|s| s.0 >= first.0) {
        if *t >= next_s || std::ptr::eq(procs, &last.1) {
            let kept = procs
                .iter()
                .filter(|(n, (pid, _))| g.per_process.contains_key(*n) && first.1[*n].0 == *pid)
                .map(|(n, (_, kb))| (n.clone(), *kb))
                .collect();
            g.per_minute.push((*t, kept));
            next_s = t + SERIES_EVERY_S;
        }
    }
    g.growth_pct = if g.start_kb > 0 {
        (g.end_kb as f64 - g.start_kb as f64) * 100.0 / g.start_kb as f64
    } else {
        0.0
    };
    Some(g)
}

/// One fault as it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultRec {
    #[serde(flatten)]
    pub fault: Fault,
    /// When it was injected, s into the run (None: it never was).
    pub injected_s: Option<f64>,
    /// Seconds after its cause ended until the cell was whole again.
    pub recovery_s: Option<f64>,
    /// What the injection found (a refused update's reason, an error).
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindRow {
    pub kind: String,
    pub injected: u32,
    pub recovered: u32,
    pub recovery_s: Percentiles,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ChaosReport {
    pub seed: u64,
    pub faults: Vec<FaultRec>,
    pub kinds: Vec<KindRow>,
    pub injected: u32,
    /// Faults the cell was not whole again from when the run ended.
    pub unrecovered: u32,
    pub lost: Vec<Lost>,
    /// Not registered, but the cell was blind for the whole time they were
    /// in view (the camera, detector or tracker down): no system could
    /// have seen them. Counted apart from `lost`.
    pub unseen_while_blind: Vec<Lost>,
    pub terminal_twice: u32,
    pub out_of_limits: Vec<OutOfLimits>,
    /// Bad parameter updates a node accepted (must be 0).
    pub bad_params_accepted: u32,
    /// Truth objects that arrived and left within the checked window.
    pub truth_objects_checked: u32,
    /// Resident memory, from after warm-up to the end (None: too short).
    pub rss: Option<RssGrowth>,
    /// Node-seconds spent degraded while the cell was up (summed over nodes).
    pub degraded_node_s: f64,
    /// The Fast DDS shared memory the killed processes left, removed
    /// ([`crate::kit::shm`]): files, and the memory they held, MB.
    pub shm_swept_files: u64,
    pub shm_swept_mb: f64,
}

impl ChaosReport {
    pub fn rows(faults: &[FaultRec]) -> Vec<KindRow> {
        let mut by: BTreeMap<&str, (u32, Vec<f64>)> = BTreeMap::new();
        for f in faults.iter().filter(|f| f.injected_s.is_some()) {
            let (n, rec) = by.entry(f.fault.kind.as_str()).or_default();
            *n += 1;
            rec.extend(f.recovery_s);
        }
        by.into_iter()
            .map(|(kind, (injected, rec))| KindRow {
                kind: kind.to_string(),
                injected,
                recovered: rec.len() as u32,
                recovery_s: Percentiles::of(rec),
            })
            .collect()
    }

    pub fn holds(&self) -> bool {
        self.lost.is_empty()
            && self.terminal_twice == 0
            && self.out_of_limits.is_empty()
            && self.bad_params_accepted == 0
            && self.unrecovered == 0
    }

    pub fn text(&self) -> String {
        let mut s = format!(
            "chaos (seed {}): {} faults injected, {} not recovered; nodes degraded {:.1} node-s in all\n",
            self.seed, self.injected, self.unrecovered, self.degraded_node_s
        );
        s += "  kind                 n  recovery p50   p99    max (s)\n";
        for r in &self.kinds {
            s += &format!(
                "  {:<18} {:>3}  {:>9.2} {:>6.2} {:>6.2}{}\n",
                r.kind,
                r.injected,
                r.recovery_s.p50,
                r.recovery_s.p99,
                r.recovery_s.max,
                if r.recovered < r.injected {
                    format!("  ({} not recovered)", r.injected - r.recovered)
                } else {
                    String::new()
                }
            );
        }
        if let Some(r) = &self.rss {
            s += &format!(
                "  memory (resident, {} processes that ran throughout): {:.1} MB at {:.0} s, {:.1} MB at {:.0} s ({:+.1} %), at most {:.1} MB\n",
                r.per_process.len(),
                r.start_kb as f64 / 1024.0,
                r.from_s,
                r.end_kb as f64 / 1024.0,
                r.to_s,
                r.growth_pct,
                r.max_kb as f64 / 1024.0
            );
        }
        s += &format!(
            "  shared memory the killed processes left in /dev/shm: {} files ({:.1} MB), removed\n",
            self.shm_swept_files, self.shm_swept_mb
        );
        s += &format!(
            "  invariants: lost {} (of {} truth objects checked; {} more passed while perception was down), terminal twice {}, outside soft limits {}, bad updates accepted {}\n",
            self.lost.len(),
            self.truth_objects_checked,
            self.unseen_while_blind.len(),
            self.terminal_twice,
            self.out_of_limits.len(),
            self.bad_params_accepted
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        KINDS.iter().map(|k| k.to_string()).collect()
    }

    fn nodes() -> Vec<String> {
        [
            "sim",
            "state_manager",
            "camera",
            "detector",
            "tracker",
            "cnc_1",
            "cnc_2",
            "scheduler",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn a_plan_is_the_same_for_a_seed_covers_every_kind_and_keeps_faults_apart() {
        let ids = vec!["1".to_string(), "2".to_string()];
        let a = plan(7, 10.0, 560.0, 4.0, &all(), &nodes(), &ids);
        assert_eq!(a, plan(7, 10.0, 560.0, 4.0, &all(), &nodes(), &ids));
        assert_ne!(a, plan(8, 10.0, 560.0, 4.0, &all(), &nodes(), &ids));
        assert_eq!(a.len(), 37);
        for k in KINDS {
            assert!(a.iter().filter(|f| f.kind == *k).count() >= 2, "{k}");
        }
        let slot = 550.0 / 37.0;
        for w in a.windows(2) {
            assert!(w[1].at_s - w[0].at_s >= slot / 2.0 - 1e-9, "{w:?}");
        }
        assert!(a.iter().all(|f| (10.0..560.0).contains(&f.at_s)));
        // Simulator faults become valid entries of its `faults` parameter.
        let entries: Vec<String> = a.iter().filter_map(Fault::sim_entry).collect();
        assert_eq!(entries.len(), a.iter().filter(|f| f.in_sim()).count());
        for e in entries {
            crate::sim::faults::parse_injected(&e, 1.0, &["1", "2"]).unwrap();
        }
    }

    #[test]
    fn kinds_without_their_node_are_left_out_and_unknown_kinds_named() {
        let p = plan(1, 0.0, 60.0, 10.0, &all(), &["sim".to_string()], &[]);
        assert!(!p.is_empty());
        assert!(p
            .iter()
            .all(|f| !f.kind.starts_with("kill_") && !is_cnc_kind(&f.kind)));
        let e = check_kinds(&["kill_camera".into(), "meteor".into()]).unwrap_err();
        assert!(e.contains("\"meteor\""), "{e}");
        assert_eq!(check_kinds(&[]).unwrap().len(), KINDS.len());
    }

    #[test]
    fn health_marks_a_node_down_from_its_silence_or_state_until_it_is_active() {
        let ns = vec!["a".to_string(), "b".to_string()];
        let mut h = Health::new(&ns, 2.5, 0.0);
        h.beat("a", true, 0.0);
        h.beat("b", true, 0.1);
        let up = |h: &Health| {
            h.intervals
                .iter()
                .map(|i| (i.node.clone(), i.from, i.to))
                .collect::<Vec<_>>()
        };
        assert_eq!(up(&h), vec![("a".into(), 0.0, 0.0), ("b".into(), 0.0, 0.1)]);
        h.intervals.clear();
        h.beat("a", true, 1.0);
        // b falls silent after 0.1: degraded from 2.6, noticed at 3.0.
        h.tick(3.0);
        h.beat("a", true, 3.1);
        h.beat("b", false, 4.0); // back, not yet active
        h.tick(4.5);
        assert!(h.intervals.is_empty());
        h.beat("b", true, 5.0);
        assert_eq!(up(&h), vec![("b".into(), 0.1 + 2.5, 5.0)]);
        // Killed at 5.5: down from then, not from its silence.
        h.beat("a", true, 5.4);
        h.down("b", 5.5);
        h.beat("b", true, 6.5);
        assert_eq!(up(&h).last().unwrap(), &("b".to_string(), 5.5, 6.5));
        h.beat("a", false, 7.0);
        let fin = h.finish(9.0);
        assert_eq!(fin.len(), 3);
        assert_eq!(
            fin[2],
            Interval {
                node: "a".into(),
                from: 7.0,
                to: 9.0,
                open: true
            }
        );
    }

    #[test]
    fn recovery_counts_from_the_end_of_the_cause_to_the_last_degradation_it_began() {
        let iv = |node: &str, from: f64, to: f64, open: bool| Interval {
            node: node.into(),
            from,
            to,
            open,
        };
        // cnc_1 down from 5 to 30 (an earlier fault); camera 10.5 to 14.
        let ivs = [
            iv("cnc_1", 5.0, 30.0, false),
            iv("camera", 10.5, 14.0, false),
        ];
        // A kill at 10: whole again at 14; cnc_1's outage is not its doing.
        assert_eq!(recovery_s(10.0, 10.0, 3.0, &ivs), Some(4.0));
        // A 3 s disconnect from 9: the cause ends at 12, whole at 14.
        assert_eq!(recovery_s(9.0, 12.0, 3.0, &ivs), Some(2.0));
        // Absorbed: no degradation began near it.
        assert_eq!(recovery_s(20.0, 20.0, 3.0, &ivs), Some(0.0));
        // One it began had not ended when the run did.
        let open = [iv("tracker", 29.5, 40.0, true)];
        assert_eq!(recovery_s(29.0, 29.0, 3.0, &open), None);
        assert_eq!(recovery_s(10.0, 10.0, 3.0, &open), Some(0.0));
    }

    #[test]
    fn an_object_is_lost_when_no_registration_matches_it_in_its_lane() {
        let lives = vec![
            TruthLife {
                sim_id: 1,
                lane: 0,
                arrived_s: 1.0,
                gone_s: Some(20.0),
            },
            TruthLife {
                sim_id: 2,
                lane: 1,
                arrived_s: 1.0,
                gone_s: Some(20.0),
            },
            TruthLife {
                sim_id: 3,
                lane: 1,
                arrived_s: 2.0,
                gone_s: Some(20.0),
            },
            // Arrived before the window, or still on the belt: not checked.
            TruthLife {
                sim_id: 4,
                lane: 2,
                arrived_s: 0.0,
                gone_s: Some(20.0),
            },
            TruthLife {
                sim_id: 5,
                lane: 2,
                arrived_s: 3.0,
                gone_s: None,
            },
        ];
        let frames: Vec<TruthFrame> = vec![
            (5.0, vec![(1, 0, 1.0), (2, 1, 1.0), (3, 1, 0.8)]),
            (5.1, vec![(1, 0, 1.02), (2, 1, 1.02), (3, 1, 0.82)]),
        ];
        // Object 1 registered in its lane, object 2's x seen in the wrong lane.
        let regs = [(5.09, 0u8, 1.03), (5.0, 2u8, 1.0), (5.1, 1u8, 0.81)];
        assert_eq!(lost(&lives, &frames, &regs, 0.5, 30.0, 0.05), vec![2]);
    }

    #[test]
    fn memory_growth_counts_only_processes_that_ran_throughout() {
        let at = |t: f64, v: &[(&str, u32, u64)]| -> RssSample {
            (
                t,
                v.iter()
                    .map(|(n, p, kb)| (n.to_string(), (*p, *kb)))
                    .collect(),
            )
        };
        let samples = vec![
            at(0.0, &[("a", 1, 50), ("b", 2, 10)]),
            at(60.0, &[("a", 1, 100), ("b", 2, 200)]),
            at(120.0, &[("a", 1, 110), ("b", 3, 20)]), // b restarted
            at(180.0, &[("a", 1, 104), ("b", 3, 20)]),
        ];
        let g = rss_growth(&samples, 30.0).unwrap();
        assert_eq!((g.from_s, g.to_s), (60.0, 180.0));
        assert_eq!((g.start_kb, g.end_kb, g.max_kb), (100, 104, 110));
        assert!((g.growth_pct - 4.0).abs() < 1e-9);
        assert_eq!(g.per_process.len(), 1);
        // A sample a minute, of the same processes, the last one included.
        let series: Vec<(f64, Vec<(&str, u64)>)> = g
            .per_minute
            .iter()
            .map(|(t, m)| (*t, m.iter().map(|(n, kb)| (n.as_str(), *kb)).collect()))
            .collect();
        assert_eq!(
            series,
            vec![
                (60.0, vec![("a", 100)]),
                (120.0, vec![("a", 110)]),
                (180.0, vec![("a", 104)])
            ]
        );
        assert!(rss_growth(&samples, 500.0).is_none());
    }

    #[test]
    fn blindness_covers_a_view_only_when_the_outages_join_up() {
        let down = [(5.0, 8.0), (1.0, 3.0), (2.5, 5.5)];
        assert!(covered(1.5, 7.0, &down));
        assert!(!covered(0.5, 7.0, &down));
        assert!(!covered(6.0, 9.0, &down));
        assert!(!covered(1.0, 2.0, &[]));
        let frames: Vec<TruthFrame> = vec![
            (1.0, vec![(7, 0, 0.1)]),
            (2.0, vec![(7, 0, 0.3)]),
            (3.0, vec![(7, 0, 1.4)]),
            (4.0, vec![(7, 0, 1.6)]),
        ];
        assert_eq!(in_view(&frames, 7, (0.2, 1.48)), Some((2.0, 3.0)));
        assert_eq!(in_view(&frames, 8, (0.2, 1.48)), None);
    }

    #[test]
    fn terminal_twice_counts_objects_that_leave_or_repeat_an_end() {
        let ev = |seq: u64, o: u8, to: u8| EventRec {
            seq,
            object: [o; 16],
            vision_id: String::new(),
            to,
            cnc: String::new(),
            stamp_s: seq as f64,
            belt_position_m: 0.0,
        };
        use state_id::*;
        let events = vec![
            ev(1, 1, DETECTED),
            ev(2, 1, PICKED),
            ev(2, 1, PICKED), // heard twice: one event
            ev(3, 2, DETECTED),
            ev(4, 2, MISSED),
            ev(5, 2, DETECTED),
            ev(6, 3, DETECTED),
        ];
        assert_eq!(terminal_twice(&events), 1);
        assert!(within_travel(
            [-1.0, -799.0, 0.0],
            [650.0, 800.0, 150.0],
            0.01
        ));
        assert!(!within_travel(
            [-651.0, -1.0, 0.0],
            [650.0, 800.0, 150.0],
            0.01
        ));
        assert!(!within_travel(
            [0.5, -1.0, 0.0],
            [650.0, 800.0, 150.0],
            0.01
        ));
    }
}
