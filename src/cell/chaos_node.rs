//! The chaos run's shell: one node (`/cell/chaos`) that watches the cell
//! (heartbeats, CNC positions, the simulator's truth), carries the lossy
//! link between the detector and the tracker, and injects the runner's
//! faults (kills through the process table, parameter updates through the
//! nodes' own services). The decisions are in [`super::chaos`].

use super::chaos::{
    covered, lost, recovery_s, terminal_twice, within_travel, BadValue, ChaosReport, Fault,
    FaultRec, Health, OutOfLimits, TruthFrame, TruthLife, BAD_PARAMS, LINK_FROM, LINK_TOPIC,
};
use super::host::Processes;
use super::report::{parse_vision_id, Heard};
use crate::kit::app::RunningNode;
use crate::kit::time::{seconds, wall_now_s};
use crate::manager::metrics::state_id;
use crate::msgs::msg as m;
use futures::StreamExt;
use r2r::rcl_interfaces::msg::{Parameter, ParameterValue};
use r2r::rcl_interfaces::srv::SetParameters;
use r2r::QosProfile;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A node is taken as silent after this long without a heartbeat (the
/// cell's nodes beat every second).
const SILENT_AFTER_S: f64 = 2.5;
/// A degradation that begins this long after a fault's cause ended is
/// still that fault's.
const GRACE_S: f64 = 3.0;
/// Truth frames kept for matching, at most one per this period.
const FRAME_EVERY_S: f64 = 0.1;
/// Every parameter update is bounded by this.
const PARAM_TIMEOUT: Duration = Duration::from_secs(3);
/// A full disk is held past its planned time until the state manager has
/// refused work for it (there may be no write in a short window), at most
/// this long.
const DISK_FULL_HOLD_MAX_S: f64 = 20.0;

#[derive(Default)]
struct Link {
    drop_probability: f64,
    delay_ms: f64,
    until_s: f64,
}

struct Seen {
    health: Health,
    frozen: bool,
    /// (stamp, kind, cnc id) of the simulator's FAULT events.
    sim_faults: Vec<(f64, String, String)>,
    lives: BTreeMap<u64, TruthLife>,
    /// Truth frames, with only the objects in `keep_x_m` (what matching
    /// and blindness look at: the camera's view and the tolerance about
    /// it), so an hour's soak keeps megabytes, not tens of them.
    frames: Vec<TruthFrame>,
    keep_x_m: (f64, f64),
    out_of_limits: Vec<OutOfLimits>,
    link: Link,
    /// Per planned fault: when injected (runner's faults), and a note.
    injected: Vec<(Option<f64>, String)>,
    bad_accepted: u32,
    rss: Vec<super::chaos::RssSample>,
    /// When each `state_disk_full` alert was heard.
    disk_full_alerts: Vec<f64>,
}

pub struct ChaosShell {
    node: RunningNode,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    plan: Vec<Fault>,
    seed: u64,
    inject: Arc<Mutex<r2r::Publisher<r2r::std_msgs::msg::String>>>,
}

/// Seconds from `from_s` to the first `state_disk_full` alert heard after
/// it, waiting for one until `until_s` (wall clock).
async fn refused_after(seen: &Mutex<Seen>, from_s: f64, until_s: f64) -> Option<f64> {
    loop {
        let first = lock(seen)
            .disk_full_alerts
            .iter()
            .find(|t| **t >= from_s)
            .copied();
        if let Some(t) = first {
            return Some(t - from_s);
        }
        if wall_now_s() >= until_s {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ChaosShell {
    /// Starts watching `nodes` (by name, in `/cell`), with each CNC's
    /// travel (mm) for its soft limits.
    pub fn start(
        ctx: &r2r::Context,
        nodes: &[String],
        travel_mm: &BTreeMap<String, [f64; 3]>,
        plan: Vec<Fault>,
        seed: u64,
        view_m: (f64, f64),
    ) -> anyhow::Result<ChaosShell> {
        let node = RunningNode::start(ctx, "chaos", "/cell")?;
        let watched: Vec<String> = nodes.iter().map(|n| format!("/cell/{n}")).collect();
        let seen = Arc::new(Mutex::new(Seen {
            health: Health::new(&watched, SILENT_AFTER_S, wall_now_s()),
            frozen: false,
            sim_faults: Vec::new(),
            lives: BTreeMap::new(),
            frames: Vec::new(),
            keep_x_m: (view_m.0 - LOST_TOLERANCE_M, view_m.1 + LOST_TOLERANCE_M),
            out_of_limits: Vec::new(),
            link: Link::default(),
            injected: vec![(None, String::new()); plan.len()],
            bad_accepted: 0,
            rss: Vec::new(),
            disk_full_alerts: Vec::new(),
        }));
        let mut tasks = Vec::new();
        let mut n = node.node.lock();
        let reliable = QosProfile::default().reliable();
        let mut beats = n.subscribe::<m::Heartbeat>(
            crate::kit::health::HEARTBEAT_TOPIC,
            QosProfile::default().keep_last(100),
        )?;
        let mut truth = n.subscribe::<m::Truth>("sim/truth", reliable.clone().keep_last(1000))?;
        let mut statuses = Vec::new();
        for (id, travel) in travel_mm {
            let s = n.subscribe::<m::CncStatus>(
                &format!("cnc_{id}/status"),
                QosProfile::default().keep_last(10),
            )?;
            statuses.push((id.clone(), *travel, s));
        }
        let mut detections =
            n.subscribe::<m::DetectionArray>(LINK_FROM, reliable.clone().keep_last(10))?;
        let mut alerts = n.subscribe::<m::Alert>(
            crate::manager::node::ALERTS_TOPIC,
            reliable.clone().keep_last(100),
        )?;
        let inject = Arc::new(Mutex::new(
            n.create_publisher::<r2r::std_msgs::msg::String>(
                crate::sim::node::INJECT_TOPIC,
                QosProfile::default().reliable().keep_last(100),
            )?,
        ));
        let relay = Arc::new(Mutex::new(
            n.create_publisher::<m::DetectionArray>(LINK_TOPIC, reliable.keep_last(10))?,
        ));
        drop(n);
        let s = seen.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(b) = beats.next().await {
                let mut s = lock(&s);
                if !s.frozen {
                    s.health.beat(&b.node, b.state == ACTIVE, wall_now_s());
                }
            }
        }));
        let s = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let mut s = lock(&s);
                if !s.frozen {
                    s.health.tick(wall_now_s());
                }
            }
        }));
        let s = seen.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(a) = alerts.next().await {
                if a.name == crate::state::node::DISK_FULL_ALERT {
                    lock(&s).disk_full_alerts.push(wall_now_s());
                }
            }
        }));
        let s = seen.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(t) = truth.next().await {
                file_truth(&mut lock(&s), t);
            }
        }));
        for (id, travel, mut st) in statuses {
            let s = seen.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(c) = st.next().await {
                    let p = [
                        c.position_machine_mm.first().copied().unwrap_or(0.0),
                        c.position_machine_mm.get(1).copied().unwrap_or(0.0),
                        c.position_machine_mm.get(2).copied().unwrap_or(0.0),
                    ];
                    if !within_travel(p, travel, 0.01) {
                        tracing::error!(cnc = %id, "chaos: machine position {p:?} mm outside the soft limits");
                        lock(&s).out_of_limits.push(OutOfLimits {
                            cnc_id: id.clone(),
                            position_mm: p,
                            at_s: seconds(&c.header.stamp),
                        });
                    }
                }
            }));
        }
        let s = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = crate::sim::rng::stream(seed, "chaos-link");
            while let Some(d) = detections.next().await {
                let (p, delay_ms) = {
                    let s = lock(&s);
                    if wall_now_s() < s.link.until_s {
                        (s.link.drop_probability, s.link.delay_ms)
                    } else {
                        (0.0, 0.0)
                    }
                };
                if p > 0.0 && rng.random_bool(p.min(1.0)) {
                    continue;
                }
                if delay_ms > 0.0 {
                    let relay = relay.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs_f64(delay_ms / 1000.0)).await;
                        let _ = lock(&relay).publish(&d);
                    });
                } else {
                    let _ = lock(&relay).publish(&d);
                }
            }
        }));
        Ok(ChaosShell {
            node,
            seen,
            tasks,
            plan,
            seed,
            inject,
        })
    }

    /// Injects the runner's faults (the simulator injects its own), at
    /// their times after `up_s`.
    pub fn inject(&mut self, up_s: f64, processes: Arc<Processes>) -> anyhow::Result<()> {
        let mut clients = BTreeMap::new();
        {
            let mut n = self.node.node.lock();
            for f in &self.plan {
                if matches!(f.kind.as_str(), "bad_param" | "disk_full")
                    && !clients.contains_key(&f.target)
                {
                    let c = n.create_client::<SetParameters::Service>(
                        &format!("{}/set_parameters", f.target),
                        QosProfile::services_default(),
                    )?;
                    clients.insert(f.target.clone(), Arc::new(c));
                }
            }
        }
        let seen = self.seen.clone();
        let procs = processes.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(RSS_EVERY);
            loop {
                tick.tick().await;
                let mut pids = procs.pids();
                pids.insert("cncpick".into(), std::process::id());
                let sample: BTreeMap<String, (u32, u64)> = pids
                    .into_iter()
                    .filter_map(|(n, pid)| rss_kb(pid).map(|kb| (n, (pid, kb))))
                    .collect();
                let mut s = lock(&seen);
                if !s.frozen {
                    s.rss.push((wall_now_s() - up_s, sample));
                }
            }
        }));
        let plan = self.plan.clone();
        let seen = self.seen.clone();
        let inject = self.inject.clone();
        self.tasks.push(tokio::spawn(async move {
            for (i, f) in plan.iter().enumerate() {
                let wait = up_s + f.at_s - wall_now_s();
                if wait > 0.0 {
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                }
                let at = wall_now_s();
                // A fault of the whole camera (frame_drop) has no target.
                let on = if f.target.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", f.target)
                };
                tracing::warn!("chaos: {}{on} (for {:.1} s)", f.kind, f.for_s);
                let note = match f.kind.as_str() {
                    _ if f.in_sim() => {
                        let entry = f.sim_entry().unwrap_or_default();
                        let data = r2r::std_msgs::msg::String {
                            data: entry.clone(),
                        };
                        match lock(&inject).publish(&data) {
                            Ok(()) => format!("sim: {entry}"),
                            Err(e) => format!("sim: {entry}: not sent ({e})"),
                        }
                    }
                    k if k.starts_with("kill_") => match processes.kill(&f.target) {
                        Some(pid) => {
                            // Down from now, not from when its silence shows.
                            let node = format!("/cell/{}", f.target);
                            lock(&seen).health.down(&node, at);
                            format!("SIGKILL to pid {pid}")
                        }
                        None => "no such process".to_string(),
                    },
                    "dds_drop" | "dds_delay" => {
                        let mut s = lock(&seen);
                        s.link = Link {
                            drop_probability: if k_is(f, "dds_drop") { f.amount } else { 0.0 },
                            delay_ms: if k_is(f, "dds_delay") { f.amount } else { 0.0 },
                            until_s: at + f.for_s,
                        };
                        format!(
                            "{} on {}",
                            if k_is(f, "dds_drop") { "drop" } else { "delay" },
                            LINK_FROM
                        )
                    }
                    "disk_full" => {
                        let c = &clients[&f.target];
                        let full = set(c, &f.target, "size_limit_mb", double(1e-6)).await;
                        tokio::time::sleep(Duration::from_secs_f64(f.for_s)).await;
                        let refused = refused_after(&seen, at, at + f.for_s + DISK_FULL_HOLD_MAX_S)
                            .await
                            .map_or(
                                format!("no work refused in {DISK_FULL_HOLD_MAX_S} s"),
                                |s| format!("work refused after {s:.1} s"),
                            );
                        let room = set(c, &f.target, "size_limit_mb", double(0.0)).await;
                        format!("cap: {}; {refused}; lifted: {}", said(&full), said(&room))
                    }
                    "bad_param" => {
                        let (_, name, bad) = BAD_PARAMS[f.amount as usize];
                        let r = set(&clients[&f.target], &f.target, name, value(bad)).await;
                        if matches!(r, Ok((true, _))) {
                            lock(&seen).bad_accepted += 1;
                            tracing::error!("chaos: {} accepted {name} = {bad:?}", f.target);
                        }
                        format!("{name} = {bad:?}: {}", said(&r))
                    }
                    other => format!("unknown kind {other}"),
                };
                lock(&seen).injected[i] = (Some(at - up_s), note);
            }
        }));
        Ok(())
    }

    /// Stops judging health at `end_s` (the cell is about to be taken down).
    pub fn freeze(&self, end_s: f64) {
        let mut s = lock(&self.seen);
        s.health.tick(end_s);
        s.frozen = true;
    }

    /// The chaos report of a run up from `up_s` to `end_s`; memory growth
    /// is taken from `warmup_s` into the run; `view_m` is the camera's view
    /// along the belt.
    pub async fn finish(
        self,
        heard: &Heard,
        up_s: f64,
        end_s: f64,
        warmup_s: f64,
        view_m: (f64, f64),
    ) -> ChaosReport {
        crate::kit::app::stop_tasks(self.tasks).await;
        self.node.stop();
        let s = lock(&self.seen);
        let intervals = s.health.finish(end_s);
        // The simulator's faults: the k-th of a kind and CNC is the k-th planned.
        let mut sim_at: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
        for (t, kind, cnc) in &s.sim_faults {
            sim_at
                .entry((kind.clone(), cnc.clone()))
                .or_default()
                .push(*t);
        }
        let mut used: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut faults = Vec::new();
        for (i, f) in self.plan.iter().enumerate() {
            let (injected_abs, note) = if f.in_sim() {
                // Only what the simulator's truth says it did counts.
                let key = (f.kind.clone(), f.target.clone());
                let k = used.entry(key.clone()).or_default();
                let t = sim_at.get(&key).and_then(|v| v.get(*k)).copied();
                *k += 1;
                (t, s.injected[i].1.clone())
            } else {
                (s.injected[i].0.map(|t| t + up_s), s.injected[i].1.clone())
            };
            let recovery =
                injected_abs.and_then(|t| recovery_s(t, t + f.for_s, GRACE_S, &intervals));
            faults.push(FaultRec {
                fault: f.clone(),
                injected_s: injected_abs.map(|t| t - up_s),
                recovery_s: recovery,
                note,
            });
        }
        let mut regs = Vec::new();
        let mut first: std::collections::HashSet<[u8; 16]> = Default::default();
        let mut events = heard.events.clone();
        events.sort_by_key(|e| e.seq);
        for e in &events {
            // The registration's x is where the track was when it was
            // first sent (a few frames after its first exposure, the vision
            // id's stamp), however late the state manager took it.
            if e.to == state_id::DETECTED && first.insert(e.object) {
                if let Some((seen_s, lane)) = parse_vision_id(&e.vision_id) {
                    regs.push((seen_s, lane, e.belt_position_m));
                }
            }
        }
        let lives: Vec<TruthLife> = s.lives.values().cloned().collect();
        // Perception down: the camera, detector or tracker degraded.
        let blind: Vec<(f64, f64)> = intervals
            .iter()
            .filter(|i| PERCEPTION.iter().any(|n| i.node == format!("/cell/{n}")))
            .map(|i| (i.from, i.to))
            .collect();
        let (unseen_while_blind, lost): (Vec<_>, Vec<_>) = lost(
            &lives,
            &s.frames,
            &regs,
            up_s,
            end_s - 2.0,
            LOST_TOLERANCE_M,
        )
        .into_iter()
        .filter_map(|id| s.lives.get(&id))
        .map(|l| {
            // Blind for all its time in view but the last
            // confirmation's worth: nothing could have seen it.
            let blind_for_it = super::chaos::in_view(&s.frames, l.sim_id, view_m)
                .is_none_or(|(a, b)| covered(a, b - CONFIRM_S, &blind));
            let rec = super::chaos::Lost {
                sim_id: l.sim_id,
                lane: l.lane,
                arrived_s: l.arrived_s - up_s,
                gone_s: l.gone_s.unwrap_or(end_s) - up_s,
            };
            (blind_for_it, rec)
        })
        .partition(|(b, _)| *b);
        let unseen_while_blind: Vec<_> = unseen_while_blind.into_iter().map(|x| x.1).collect();
        let lost: Vec<_> = lost.into_iter().map(|x| x.1).collect();
        let to_s = end_s - 2.0;
        let checked = lives
            .iter()
            .filter(|l| l.arrived_s >= up_s && l.gone_s.is_some_and(|g| g <= to_s))
            .count() as u32;
        let injected = faults.iter().filter(|f| f.injected_s.is_some()).count() as u32;
        let unrecovered = faults
            .iter()
            .filter(|f| f.injected_s.is_some() && f.recovery_s.is_none())
            .count() as u32;
        let (shm_swept_files, shm_swept_bytes) = crate::kit::shm::swept_total();
        ChaosReport {
            seed: self.seed,
            kinds: ChaosReport::rows(&faults),
            faults,
            injected,
            unrecovered,
            lost,
            unseen_while_blind,
            terminal_twice: terminal_twice(&heard.events),
            out_of_limits: s.out_of_limits.clone(),
            bad_params_accepted: s.bad_accepted,
            truth_objects_checked: checked,
            rss: super::chaos::rss_growth(&s.rss, warmup_s),
            degraded_node_s: intervals
                .iter()
                .map(|i| i.to.min(end_s) - i.from.max(up_s))
                .filter(|d| *d > 0.0)
                .sum(),
            shm_swept_files,
            shm_swept_mb: shm_swept_bytes as f64 / 1e6,
        }
    }
}

/// How far a registration's belt x may be from the simulated object's at
/// its first exposure (the track is sent once confirmed, some frames on).
const LOST_TOLERANCE_M: f64 = 0.3;

const ACTIVE: u8 = 3;

/// The nodes the cell sees with.
const PERCEPTION: [&str; 3] = ["camera", "detector", "tracker"];
/// What an object needs in view to be confirmed and registered, about.
const CONFIRM_S: f64 = 0.5;

/// Memory is sampled this often.
const RSS_EVERY: Duration = Duration::from_secs(5);

/// A process's resident set, kB (Linux).
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn k_is(f: &Fault, kind: &str) -> bool {
    f.kind == kind
}

fn file_truth(s: &mut Seen, t: m::Truth) {
    let at = seconds(&t.header.stamp);
    for o in &t.objects {
        s.lives.entry(o.sim_id).or_insert_with(|| TruthLife {
            sim_id: o.sim_id,
            lane: o.lane,
            arrived_s: seconds(&o.arrived),
            gone_s: None,
        });
    }
    for e in &t.events {
        let kind = e.kind as u32;
        if kind == m::TruthEvent::FAULT as u32 {
            s.sim_faults
                .push((seconds(&e.stamp), e.detail.clone(), e.cnc_id.clone()));
        } else if [
            m::TruthEvent::BINNED as u32,
            m::TruthEvent::FELL_OFF as u32,
            m::TruthEvent::DROPPED as u32,
        ]
        .contains(&kind)
        {
            {
                if let Some(l) = s.lives.get_mut(&e.sim_id) {
                    l.gone_s = Some(seconds(&e.stamp));
                }
            }
        }
    }
    if s.frames.last().is_none_or(|f| at - f.0 >= FRAME_EVERY_S) {
        let (lo, hi) = s.keep_x_m;
        s.frames.push((
            at,
            t.objects
                .iter()
                .filter(|o| o.state as u32 == m::TruthObject::ON_BELT as u32)
                .filter(|o| o.position.x >= lo && o.position.x <= hi)
                .map(|o| (o.sim_id, o.lane, o.position.x))
                .collect(),
        ));
    }
}

fn double(x: f64) -> ParameterValue {
    ParameterValue {
        type_: 3,
        double_value: x,
        ..ParameterValue::default()
    }
}

fn value(v: BadValue) -> ParameterValue {
    match v {
        BadValue::Integer(i) => ParameterValue {
            type_: 2,
            integer_value: i,
            ..ParameterValue::default()
        },
        BadValue::Double(x) => double(x),
        BadValue::Text(t) => ParameterValue {
            type_: 4,
            string_value: t.to_string(),
            ..ParameterValue::default()
        },
    }
}

/// Sets one parameter; (successful, reason).
async fn set(
    client: &r2r::Client<SetParameters::Service>,
    node: &str,
    name: &str,
    value: ParameterValue,
) -> anyhow::Result<(bool, String)> {
    let req = SetParameters::Request {
        parameters: vec![Parameter {
            name: name.to_string(),
            value,
        }],
    };
    let service = format!("{node}/set_parameters");
    let r = crate::kit::call::call(client, &service, &req, PARAM_TIMEOUT).await?;
    let first = r
        .results
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("{service}: no result"))?;
    Ok((first.successful, first.reason))
}

fn said(r: &anyhow::Result<(bool, String)>) -> String {
    match r {
        Ok((true, _)) => "accepted".into(),
        Ok((false, why)) => format!("refused ({why})"),
        Err(e) => format!("failed ({e:#})"),
    }
}
