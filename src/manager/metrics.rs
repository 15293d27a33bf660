//! The cell's KPIs (seed 6.1) over a sliding window, from what the nodes
//! publish: object events (the state manager), pick results and statuses
//! (the CNCs), tracks (lanes and congestion) and each node's counters (its
//! /diagnostics). Pure: every sample carries its time.
//!
//! Rates are over picks that were wanted: `pick_success_rate` and
//! `miss_rate` divide by picked + dropped + missed. A BYPASSED object (its
//! class goes to no bin, or no CNC could reach it in time) is counted apart.
//! Each object's registration and end count once, however often their
//! events are heard.

use std::collections::{BTreeMap, HashMap, VecDeque};

use hashlink::LinkedHashMap;

/// ObjectState ids (cncpick_msgs/ObjectState).
pub mod state_id {
    pub const UNKNOWN: u8 = 0;
    pub const DETECTED: u8 = 1;
    pub const PICKED: u8 = 4;
    pub const DROPPED: u8 = 5;
    pub const MISSED: u8 = 6;
    pub const BYPASSED: u8 = 7;
}
/// PickOutcome values.
pub const OUTCOME_PICKED: u8 = 0;
pub const OUTCOME_REJECTED: u8 = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// An accepted transition of `object` from state `from` to `to`
    /// (from UNKNOWN: its registration).
    Event {
        object: [u8; 16],
        from: u8,
        to: u8,
        cnc: String,
    },
    Pick {
        cnc: String,
        outcome: u8,
        cycle_time_s: f64,
    },
    Status {
        cnc: String,
        busy: bool,
        queue_depth: u32,
    },
    /// The live tracks: (object, lane).
    Tracks { objects: Vec<([u8; 16], u8)> },
    /// A node's running counters (from its /diagnostics status).
    Node {
        node: String,
        messages: u64,
        errors: u64,
        queue_depth: u64,
        latency_s: Option<f64>,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CncKpi {
    pub cnc_id: String,
    pub utilisation: f64,
    pub picks: u32,
    pub failures: u32,
    pub avg_cycle_time_s: f64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LaneKpi {
    pub lane: u8,
    pub throughput_per_min: f64,
    pub miss_rate: f64,
    /// Live objects per metre of belt in the lane.
    pub congestion: f64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeKpi {
    pub node: String,
    pub message_rate_hz: f64,
    pub processing_latency_s: f64,
    pub error_rate: f64,
    pub queue_depth: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Kpis {
    pub window_s: f64,
    pub objects_per_min: f64,
    pub pick_success_rate: f64,
    pub avg_cycle_time_s: f64,
    pub miss_rate: f64,
    /// Mean of the CNCs' utilisation.
    pub utilisation: f64,
    pub picked: u32,
    pub dropped: u32,
    pub missed: u32,
    pub bypassed: u32,
    pub cncs: Vec<CncKpi>,
    pub lanes: Vec<LaneKpi>,
    pub nodes: Vec<NodeKpi>,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub window_s: f64,
    pub lanes: u8,
    pub belt_length_m: f64,
    pub cnc_ids: Vec<String>,
    /// miss_rate above this is a warning (seed: 0.1) ...
    pub miss_rate_warning: f64,
    /// ... once at least this many wanted picks ended in the window.
    pub min_samples: u32,
}

pub struct MetricsCore {
    cfg: MetricsConfig,
    samples: VecDeque<(f64, Sample)>,
    /// Each tracked object's lane, and when a track last showed it.
    lane_of: HashMap<[u8; 16], (u8, f64)>,
    /// When `lane_of` was last swept of objects long gone.
    swept_s: f64,
    live: Vec<([u8; 16], u8)>,
    node_first: BTreeMap<String, VecDeque<(f64, u64, u64)>>,
    node_last: BTreeMap<String, (u64, Option<f64>)>,
    cnc_queue: BTreeMap<String, u32>,
    miss_alarm: bool,
    /// What of each object has been counted ([`REGISTERED`], [`ENDED`]),
    /// oldest first, at most [`COUNTED_KEPT`] objects: an event heard
    /// again (the events topic's history, republished by a restarted state
    /// manager) counts once.
    counted: LinkedHashMap<[u8; 16], u8>,
}

const REGISTERED: u8 = 1;
const ENDED: u8 = 2;
/// Objects whose counting is remembered: over an hour of the cell's
/// arrivals, far longer than the events topic's history (1000 events)
/// reaches back.
const COUNTED_KEPT: usize = 10_000;

impl MetricsCore {
    pub fn new(cfg: MetricsConfig) -> Self {
        MetricsCore {
            cfg,
            samples: VecDeque::new(),
            lane_of: HashMap::new(),
            swept_s: f64::NEG_INFINITY,
            live: Vec::new(),
            node_first: BTreeMap::new(),
            node_last: BTreeMap::new(),
            cnc_queue: BTreeMap::new(),
            miss_alarm: false,
            counted: LinkedHashMap::new(),
        }
    }

    pub fn add(&mut self, t_s: f64, s: Sample) {
        match &s {
            Sample::Tracks { objects } => {
                for (o, lane) in objects {
                    self.lane_of.insert(*o, (*lane, t_s));
                }
                // An object whose end was never heard (its event lost)
                // would stay forever: forget it two windows after its
                // last track, once a second.
                if t_s - self.swept_s >= 1.0 {
                    let since_s = t_s - 2.0 * self.cfg.window_s;
                    self.lane_of.retain(|_, (_, seen_s)| *seen_s >= since_s);
                    self.swept_s = t_s;
                }
                self.live = objects.clone();
                return;
            }
            Sample::Node {
                node,
                messages,
                errors,
                queue_depth,
                latency_s,
            } => {
                let h = self.node_first.entry(node.clone()).or_default();
                h.push_back((t_s, *messages, *errors));
                while h.len() > 1 && h.front().is_some_and(|f| f.0 < t_s - self.cfg.window_s) {
                    h.pop_front();
                }
                self.node_last
                    .insert(node.clone(), (*queue_depth, *latency_s));
                return;
            }
            Sample::Status {
                cnc, queue_depth, ..
            } => {
                self.cnc_queue.insert(cnc.clone(), *queue_depth);
            }
            Sample::Event {
                object, from, to, ..
            } => {
                // The KPIs count an object's registration and its end, each
                // once: not a revoke (ASSIGNED → DETECTED) as an arrival,
                // nor an event heard again.
                let what = if *from == state_id::UNKNOWN {
                    REGISTERED
                } else if is_terminal(*to) {
                    ENDED
                } else {
                    return;
                };
                let seen = self.counted.entry(*object).or_insert(0);
                if *seen & what != 0 {
                    return;
                }
                *seen |= what;
                while self.counted.len() > COUNTED_KEPT {
                    self.counted.pop_front();
                }
            }
            Sample::Pick { .. } => {}
        }
        self.samples.push_back((t_s, s));
        while self
            .samples
            .front()
            .is_some_and(|f| f.0 < t_s - self.cfg.window_s)
        {
            if let Some((_, Sample::Event { object, to, .. })) = self.samples.pop_front() {
                if is_terminal(to) {
                    self.lane_of.remove(&object);
                }
            }
        }
    }

    /// How many objects' lanes are remembered (bounded by the objects
    /// tracked in the last two windows).
    pub fn lanes_remembered(&self) -> usize {
        self.lane_of.len()
    }

    pub fn kpis(&self, now_s: f64) -> Kpis {
        let from = now_s - self.cfg.window_s;
        let per_min = 60.0 / self.cfg.window_s.max(1e-9);
        let mut k = Kpis {
            window_s: self.cfg.window_s,
            ..Kpis::default()
        };
        let lanes = self.cfg.lanes as usize;
        let mut lane_counts = vec![[0u32; 3]; lanes]; // picked, dropped, missed
        let mut registered = 0u32;
        let mut cnc: BTreeMap<&str, CncTally> = self
            .cfg
            .cnc_ids
            .iter()
            .map(|c| (c.as_str(), CncTally::default()))
            .collect();
        let mut cycle = (0u32, 0.0);
        for (_, s) in self.samples.iter().filter(|(t, _)| *t >= from) {
            match s {
                Sample::Event { object, to, .. } => {
                    let lane = self.lane_of.get(object).map(|l| l.0 as usize);
                    let slot = match *to {
                        state_id::DETECTED => {
                            registered += 1;
                            None
                        }
                        state_id::PICKED => {
                            k.picked += 1;
                            Some(0)
                        }
                        state_id::DROPPED => {
                            k.dropped += 1;
                            Some(1)
                        }
                        state_id::MISSED => {
                            k.missed += 1;
                            Some(2)
                        }
                        state_id::BYPASSED => {
                            k.bypassed += 1;
                            None
                        }
                        _ => None,
                    };
                    if let (Some(i), Some(l)) = (slot, lane) {
                        if l < lanes {
                            lane_counts[l][i] += 1;
                        }
                    }
                }
                Sample::Pick {
                    cnc: id,
                    outcome,
                    cycle_time_s,
                } => {
                    let e = cnc.entry(id.as_str()).or_default();
                    if *outcome == OUTCOME_PICKED {
                        e.picks += 1;
                        e.cycle_sum_s += cycle_time_s;
                        cycle.0 += 1;
                        cycle.1 += cycle_time_s;
                    } else if *outcome != OUTCOME_REJECTED {
                        e.failures += 1;
                    }
                }
                Sample::Status { cnc: id, busy, .. } => {
                    let e = cnc.entry(id.as_str()).or_default();
                    e.statuses += 1;
                    if *busy {
                        e.busy += 1;
                    }
                }
                _ => {}
            }
        }
        let wanted = k.picked + k.dropped + k.missed;
        k.objects_per_min = registered as f64 * per_min;
        k.pick_success_rate = ratio(k.picked as f64, wanted as f64);
        k.miss_rate = ratio(k.missed as f64, wanted as f64);
        k.avg_cycle_time_s = ratio(cycle.1, cycle.0 as f64);
        let metre = self.cfg.belt_length_m.max(1e-9);
        k.lanes = (0..lanes)
            .map(|l| {
                let [p, d, m] = lane_counts[l];
                LaneKpi {
                    lane: l as u8,
                    throughput_per_min: p as f64 * per_min,
                    miss_rate: ratio(m as f64, (p + d + m) as f64),
                    congestion: self.live.iter().filter(|(_, x)| *x as usize == l).count() as f64
                        / metre,
                }
            })
            .collect();
        k.cncs = cnc
            .iter()
            .map(|(id, t)| CncKpi {
                cnc_id: id.to_string(),
                utilisation: ratio(t.busy as f64, t.statuses as f64),
                picks: t.picks,
                failures: t.failures,
                avg_cycle_time_s: ratio(t.cycle_sum_s, t.picks as f64),
            })
            .collect();
        k.utilisation = ratio(
            k.cncs.iter().map(|c| c.utilisation).sum(),
            k.cncs.len() as f64,
        );
        k.nodes = self
            .node_first
            .iter()
            .map(|(node, h)| {
                let (first, last) = (h.front(), h.back());
                let (rate, err) = match (first, last) {
                    (Some(a), Some(b)) if b.0 > a.0 => {
                        let msgs = b.1.saturating_sub(a.1) as f64;
                        (
                            msgs / (b.0 - a.0),
                            ratio(b.2.saturating_sub(a.2) as f64, msgs),
                        )
                    }
                    _ => (0.0, 0.0),
                };
                let (queue, latency) = self.node_last.get(node).copied().unwrap_or((0, None));
                let queue = self
                    .cnc_queue
                    .iter()
                    .find(|(c, _)| node == &format!("cnc_{c}"))
                    .map(|(_, q)| *q as u64)
                    .unwrap_or(queue);
                NodeKpi {
                    node: node.clone(),
                    message_rate_hz: rate,
                    processing_latency_s: latency.unwrap_or(0.0),
                    error_rate: err.min(1.0),
                    queue_depth: queue.min(u32::MAX as u64) as u32,
                }
            })
            .collect();
        k
    }

    /// The miss-rate alert, edge-triggered: Some(true) when the rate rises
    /// past the threshold, Some(false) when it falls back under 80 % of it.
    pub fn miss_rate_alert(&mut self, k: &Kpis) -> Option<bool> {
        let wanted = k.picked + k.dropped + k.missed;
        let high = wanted >= self.cfg.min_samples && k.miss_rate > self.cfg.miss_rate_warning;
        let low = k.miss_rate < 0.8 * self.cfg.miss_rate_warning;
        if high && !self.miss_alarm {
            self.miss_alarm = true;
            Some(true)
        } else if low && self.miss_alarm {
            self.miss_alarm = false;
            Some(false)
        } else {
            None
        }
    }
}

/// One CNC's counts over the window.
#[derive(Default)]
struct CncTally {
    picks: u32,
    failures: u32,
    cycle_sum_s: f64,
    statuses: u32,
    busy: u32,
}

fn is_terminal(to: u8) -> bool {
    matches!(
        to,
        state_id::PICKED | state_id::DROPPED | state_id::MISSED | state_id::BYPASSED
    )
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}
