//! Golden-bag regression: a bag's inputs replayed through the pure cores
//! (detector, tracker, scheduler), offline and deterministically, give a
//! list of decisions; the golden file holds the decisions the bag gave when
//! it was recorded, and any change is reported by the first decision that
//! differs.
//!
//! - The **cell** bag comes from a live simulated run: its detections go
//!   through the tracker; the tracks, the CNCs' statuses and the object
//!   events through the scheduler, at each message's receive time, with a
//!   tick every `tick_period_s` of bag time. The world's answers come from
//!   the bag: an assignment is accepted if the run's state manager accepted
//!   it, a goal is accepted, and its result comes with the object's final
//!   event.
//! - The **frames** bag holds low-resolution camera frames: they go through
//!   the detector, and its detections through the tracker.

use crate::bag::reader::Bag;
use crate::detector::core::Detector;
use crate::detector::node::detections_msg;
use crate::detector::params::DetectorParams;
use crate::kit::params::{load, NodeParams, RosArgs};
use crate::kit::time::seconds;
use crate::motion::params::MotionParams;
use crate::msgs::msg as m;
use crate::sched::core::{Core, Input, ObjectId, Output};
use crate::sched::node::{event_input, status_input, tracks_input};
use crate::sched::params::SchedParams;
use crate::state::lifecycle::ObjState;
use crate::tracker::core::Tracker;
use crate::tracker::node::{observation, tracks_msg};
use crate::tracker::params::TrackerParams;
use r2r::WrappedTypesupport;
use serde_json::{json, Value};
use std::collections::{BTreeSet, VecDeque};
use std::path::Path;

pub const DETECTIONS: &str = "/cell/detections";
pub const TRACKS: &str = "/cell/tracks";
pub const EVENTS: &str = "/cell/objects/events";
pub const ASSIGNMENTS: &str = "/cell/assignments";
pub const IMAGES: &str = "/cell/camera/image_raw";

fn status_topic(cnc: &str) -> String {
    format!("/cell/cnc_{cnc}/status")
}

/// The topics a cell bag keeps (`golden rerecord` copies these).
pub fn cell_topics(cnc_ids: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        DETECTIONS,
        TRACKS,
        EVENTS,
        ASSIGNMENTS,
        "/cell/pick_results",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(cnc_ids.iter().map(|c| status_topic(c)));
    v
}

/// A node's parameters from one params file (no environment, no overrides).
pub fn params<P: NodeParams>(file: &Path, node: &str) -> Result<P, String> {
    let args = RosArgs {
        params_files: vec![file.to_path_buf()],
        ..RosArgs::default()
    };
    load(&format!("/cell/{node}"), &args, |_| None).map_err(|e| e.to_string())
}

/// Floats rounded to 1e-6 (µm, µs), and object ids as hex: decisions read
/// the same on any machine that computes the same thing, and a diff is
/// readable.
fn rounded(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            json!((f * 1e6).round() / 1e6)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(rounded).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| match (k.as_str(), &v) {
                    ("id", Value::Array(a)) if a.len() == 16 => {
                        let bytes: Vec<u8> = a
                            .iter()
                            .filter_map(|x| x.as_u64().map(|x| x as u8))
                            .collect();
                        (k, Value::String(hex(&bytes)))
                    }
                    _ => (k, rounded(v)),
                })
                .collect(),
        ),
        other => other,
    }
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A track as a decision: vision id, status, position (mm, to 0.1 mm).
fn track_row(t: &m::Track) -> Value {
    let mm = |m: f64| (m * 1e4).round() / 10.0;
    json!([t.vision_id, t.status, mm(t.position.x), mm(t.position.y)])
}

fn decode<T: WrappedTypesupport>(bag: &Bag, k: usize) -> Result<T, String> {
    let msg = &bag.messages[k];
    T::from_serialized_bytes(&msg.data).map_err(|e| {
        format!(
            "{}: message {k} on {}: does not decode: {e}",
            bag.path.display(),
            bag.topics[msg.topic].name
        )
    })
}

/// The tracker's part: one decision per frame (the tracks it holds).
struct TrackStage {
    tracker: Tracker,
}

impl TrackStage {
    fn new(file: &Path) -> Result<TrackStage, String> {
        let p: TrackerParams = params(file, "tracker")?;
        Ok(TrackStage {
            tracker: Tracker::new(p.config()?),
        })
    }

    /// One DetectionArray: the TrackArray it leads to, as the node
    /// publishes it (None: an old frame, dropped as the node drops it).
    fn step(&mut self, d: &m::DetectionArray, out: &mut Vec<Value>) -> Option<m::TrackArray> {
        let t_s = seconds(&d.header.stamp);
        if self.tracker.now_s().is_some_and(|now| t_s < now) {
            out.push(json!({"t": t_s, "stale_frame": d.frame_seq}));
            return None;
        }
        let obs: Vec<_> = d
            .detections
            .iter()
            .filter_map(|x| observation(x).ok())
            .collect();
        self.tracker.step(t_s, &obs);
        let tracks = tracks_msg(&self.tracker);
        let list: Vec<Value> = tracks.tracks.iter().map(track_row).collect();
        out.push(rounded(
            json!({"t": t_s, "tracks": list, "belt_mps": tracks.belt_speed_mps}),
        ));
        Some(tracks)
    }
}

/// Replays a cell bag; returns the decisions.
pub fn replay_cell(bag: &Bag, params_file: &Path) -> Result<Vec<Value>, String> {
    let sp: SchedParams = params(params_file, "scheduler")?;
    let mut tracks = TrackStage::new(params_file)?;
    let mut core = Core::new(sp.config()?);
    let mut out = Vec::new();
    let Some(first) = bag.messages.first() else {
        return Err(format!("{}: no messages", bag.path.display()));
    };
    let t0_s = first.log_time_ns as f64 / 1e9;
    for id in &sp.cnc_ids {
        let mp: MotionParams = params(params_file, &format!("cnc_{id}"))?;
        core.step(
            t0_s,
            Input::Model {
                params: Box::new(mp),
            },
        );
    }
    // What the run's state manager accepted: (object, CNC) assignments.
    let mut accepted: BTreeSet<(ObjectId, String)> = BTreeSet::new();
    let events = bag.topic_index(EVENTS);
    for (k, msg) in bag.messages.iter().enumerate() {
        if Some(msg.topic) == events {
            let e: m::ObjectEvent = decode(bag, k)?;
            if let Ok(id) = <ObjectId>::try_from(e.object_id.uuid.as_slice()) {
                if e.to_state.id == ObjState::Assigned.id() {
                    accepted.insert((id, e.cnc_id));
                }
            }
        }
    }
    let statuses: Vec<(usize, String)> = sp
        .cnc_ids
        .iter()
        .filter_map(|c| bag.topic_index(&status_topic(c)).map(|i| (i, c.clone())))
        .collect();
    let detections = bag.topic_index(DETECTIONS);
    // The live scheduler heard each TrackArray when the live tracker
    // published it: the replayed tracks go in at that time (by stamp), or
    // at their frame's time if the live ones were not recorded.
    let mut heard_at: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    if let Some(live) = bag.topic_index(TRACKS) {
        for (k, msg) in bag
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.topic == live)
        {
            let t: m::TrackArray = decode(bag, k)?;
            heard_at
                .entry(stamp_key(seconds(&t.header.stamp)))
                .or_insert(msg.log_time_ns);
        }
    }
    let mut pending: std::collections::BTreeMap<(u64, usize), m::TrackArray> =
        std::collections::BTreeMap::new();
    let mut goals: BTreeSet<ObjectId> = BTreeSet::new();
    let mut next_tick = t0_s;
    let feed = |core: &mut Core,
                now: f64,
                input: Input,
                goals: &mut BTreeSet<ObjectId>,
                out: &mut Vec<Value>| {
        let mut queue = VecDeque::from([input]);
        while let Some(i) = queue.pop_front() {
            for o in core.step(now, i) {
                match &o {
                    Output::Assign { id, cnc, .. } => queue.push_back(Input::AssignAnswer {
                        id: *id,
                        accepted: Some(accepted.contains(&(*id, cnc.clone()))),
                    }),
                    Output::SendGoal { id, .. } => {
                        goals.insert(*id);
                        queue.push_back(Input::GoalAnswer {
                            id: *id,
                            accepted: true,
                        });
                    }
                    _ => {}
                }
                let v = serde_json::to_value(&o).unwrap_or(Value::Null);
                out.push(rounded(json!({"t": now, "out": v})));
            }
        }
    };
    for (k, msg) in bag.messages.iter().enumerate() {
        let now = msg.log_time_ns as f64 / 1e9;
        // Ticks and replayed tracks due by now, in time order.
        loop {
            let track_due = pending.keys().next().copied();
            let tick_ns = (next_tick * 1e9) as u64;
            match track_due {
                Some(due) if due.0 <= msg.log_time_ns && due.0 < tick_ns => {
                    if let Some(t) = pending.remove(&due) {
                        feed(
                            &mut core,
                            due.0 as f64 / 1e9,
                            tracks_input(&t).0,
                            &mut goals,
                            &mut out,
                        );
                    }
                }
                _ if next_tick <= now => {
                    feed(&mut core, next_tick, Input::Tick, &mut goals, &mut out);
                    next_tick += sp.tick_period_s;
                }
                _ => break,
            }
        }
        if Some(msg.topic) == detections {
            let d: m::DetectionArray = decode(bag, k)?;
            if let Some(t) = tracks.step(&d, &mut out) {
                let at = heard_at
                    .get(&stamp_key(seconds(&t.header.stamp)))
                    .copied()
                    .unwrap_or(msg.log_time_ns)
                    .max(msg.log_time_ns);
                pending.insert((at, k), t);
            }
        } else if Some(msg.topic) == events {
            let e: m::ObjectEvent = decode(bag, k)?;
            if let Some(input) = event_input(&e) {
                let done = match &input {
                    Input::Event { id, state, .. }
                        if goals.contains(id)
                            && ObjState::from_id(*state).is_some_and(|s| s.is_terminal()) =>
                    {
                        Some(*id)
                    }
                    _ => None,
                };
                feed(&mut core, now, input, &mut goals, &mut out);
                if let Some(id) = done {
                    goals.remove(&id);
                    feed(&mut core, now, Input::GoalDone { id }, &mut goals, &mut out);
                }
            }
        } else if let Some((_, cnc)) = statuses.iter().find(|(i, _)| *i == msg.topic) {
            let s: m::CncStatus = decode(bag, k)?;
            feed(&mut core, now, status_input(cnc, &s), &mut goals, &mut out);
        }
    }
    Ok(out)
}

/// A stamp as whole microseconds, to match messages by stamp.
fn stamp_key(t_s: f64) -> i64 {
    (t_s * 1e6).round() as i64
}

/// Replays a frames bag through the detector and the tracker.
pub fn replay_frames(bag: &Bag, params_file: &Path) -> Result<Vec<Value>, String> {
    let dp: DetectorParams = params(params_file, "detector")?;
    let mut detector = Detector::new(dp.config()?).map_err(|e| e.to_string())?;
    let mut tracks = TrackStage::new(params_file)?;
    let mut out = Vec::new();
    let images = bag
        .topic_index(IMAGES)
        .ok_or_else(|| format!("{}: no {IMAGES} in the bag", bag.path.display()))?;
    for (seq, (k, _)) in bag
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.topic == images)
        .enumerate()
    {
        let img: r2r::sensor_msgs::msg::Image = decode(bag, k)?;
        let frame = crate::kit::frames::from_image(img, seq as u64)
            .map_err(|e| format!("{}: frame {seq}: {e}", bag.path.display()))?;
        let found = detector
            .detect(&frame.image)
            .map_err(|e| format!("{}: frame {seq}: {e}", bag.path.display()))?;
        let d = detections_msg(&frame, &found, &dp.class_names);
        let list: Vec<Value> = d
            .detections
            .iter()
            .map(|x| {
                json!([
                    x.vision_id,
                    x.class_id,
                    x.lane,
                    x.position.x,
                    x.position.y,
                    x.confidence
                ])
            })
            .collect();
        out.push(rounded(
            json!({"t": seconds(&d.header.stamp), "detections": list}),
        ));
        tracks.step(&d, &mut out);
    }
    Ok(out)
}

/// The decisions as JSON lines.
pub fn to_lines(decisions: &[Value]) -> String {
    decisions.iter().map(|d| d.to_string() + "\n").collect()
}

/// Reads a golden decisions file; errors name the file and line.
pub fn read_golden(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Ok if the decisions are the golden ones; else which one changed first.
pub fn compare(golden_file: &Path, golden: &[Value], got: &[Value]) -> Result<(), String> {
    for (i, (a, b)) in golden.iter().zip(got).enumerate() {
        if a != b {
            return Err(format!(
                "decision {} of {} changed ({}:{}):\n  golden: {a}\n  now:    {b}",
                i + 1,
                golden.len(),
                golden_file.display(),
                i + 1
            ));
        }
    }
    if golden.len() != got.len() {
        return Err(format!(
            "{} decisions now, {} in {}; the first {} agree",
            got.len(),
            golden.len(),
            golden_file.display(),
            golden.len().min(got.len())
        ));
    }
    Ok(())
}

/// How far the offline replay agrees with what the live nodes published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// Frames whose replayed tracks equal the live tracker's.
    pub frames_same: usize,
    /// Live TrackArrays compared.
    pub frames: usize,
    /// Live assignments the replay made too.
    pub assignments_same: usize,
    pub assignments: usize,
}

/// Compares the replay's decisions with the live tracks and assignments.
pub fn live_agreement(bag: &Bag, decisions: &[Value]) -> Result<Agreement, String> {
    let mut live_tracks = Vec::new();
    let mut live_assign = BTreeSet::new();
    for (k, msg) in bag.messages.iter().enumerate() {
        let name = bag.topics[msg.topic].name.as_str();
        if name == TRACKS {
            let t: m::TrackArray = decode(bag, k)?;
            let list: Vec<Value> = t.tracks.iter().map(track_row).collect();
            live_tracks.push(rounded(
                json!({"t": seconds(&t.header.stamp), "tracks": list}),
            ));
        } else if name == ASSIGNMENTS {
            let a: m::Assignment = decode(bag, k)?;
            live_assign.insert((hex(&a.object_id.uuid), a.cnc_id));
        }
    }
    let replayed: Vec<(&Value, &Value)> = decisions
        .iter()
        .filter_map(|d| Some((d.get("t")?, d.get("tracks")?)))
        .collect();
    let mut same = 0;
    for live in &live_tracks {
        let t = &live["t"];
        if replayed
            .iter()
            .any(|(rt, rl)| *rt == t && **rl == live["tracks"])
        {
            same += 1;
        }
    }
    let mut made = BTreeSet::new();
    for d in decisions {
        if let Some(a) = d.get("out").and_then(|o| o.get("Assign")) {
            made.insert((
                a["id"].as_str().unwrap_or("").to_string(),
                a["cnc"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    Ok(Agreement {
        frames_same: same,
        frames: live_tracks.len(),
        assignments_same: live_assign.intersection(&made).count(),
        assignments: live_assign.len(),
    })
}

/// The golden scenarios: (name, replay).
type Replay = fn(&Bag, &Path) -> Result<Vec<Value>, String>;
pub const SCENARIOS: [(&str, Replay); 2] = [("cell", replay_cell), ("frames", replay_frames)];

/// One scenario's files in the golden folder: the bag, its params, its decisions.
pub fn files(
    dir: &Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    (
        dir.join(name),
        dir.join(format!("{name}.yaml")),
        dir.join(format!("{name}.decisions.jsonl")),
    )
}

/// Replays one scenario: its decisions, from a sound bag only.
pub fn replay_scenario(dir: &Path, name: &str) -> Result<(Bag, Vec<Value>), String> {
    let (bag_dir, params_file, _) = files(dir, name);
    let replay = SCENARIOS
        .iter()
        .find(|s| s.0 == name)
        .ok_or_else(|| format!("no scenario {name:?}"))?
        .1;
    let bag = crate::bag::reader::open(&bag_dir)?;
    bag.sound()?;
    let decisions = replay(&bag, &params_file)?;
    Ok((bag, decisions))
}

/// `cncpick golden check`: every scenario replays to its golden decisions.
pub fn check(dir: &Path) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for (name, _) in SCENARIOS {
        let (bag, got) = replay_scenario(dir, name)?;
        let (_, _, golden_file) = files(dir, name);
        let golden = read_golden(&golden_file)?;
        compare(&golden_file, &golden, &got).map_err(|e| {
            format!(
                "{name}: {e}\n(if the change is meant, accept it with `cncpick golden rewrite`)"
            )
        })?;
        let mut line = format!(
            "{name}: {} decisions from {} messages, as golden",
            got.len(),
            bag.messages.len()
        );
        if name == "cell" {
            let a = live_agreement(&bag, &got)?;
            line += &format!(
                "; replayed tracks equal the live tracker's in {} of {} frames; \
                 {} of the live run's {} assignments made again",
                a.frames_same, a.frames, a.assignments_same, a.assignments
            );
        }
        lines.push(line);
    }
    Ok(lines)
}

/// `cncpick golden rewrite`: the golden decisions, from the bags as they are.
pub fn rewrite(dir: &Path) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for (name, _) in SCENARIOS {
        let (_, got) = replay_scenario(dir, name)?;
        let (_, _, golden_file) = files(dir, name);
        std::fs::write(&golden_file, to_lines(&got))
            .map_err(|e| format!("{}: {e}", golden_file.display()))?;
        lines.push(format!(
            "{name}: wrote {} decisions to {}",
            got.len(),
            golden_file.display()
        ));
    }
    Ok(lines)
}

/// Copies `topics` of `bag` into a new bag at `to` (zstd chunks).
pub fn copy_topics(
    bag: &Bag,
    topics: &[String],
    to: &Path,
    custom_data: Vec<(String, String)>,
) -> Result<u64, String> {
    use crate::bag::writer::{BagWriter, Compression, WriterOptions};
    let mut w = BagWriter::create(
        to,
        WriterOptions {
            compression: Compression::Zstd,
            custom_data,
            ..WriterOptions::default()
        },
    )?;
    let mut index = std::collections::BTreeMap::new();
    for t in topics {
        let i = bag
            .topic_index(t)
            .ok_or_else(|| format!("{}: no {t} in the bag", bag.path.display()))?;
        let bt = &bag.topics[i];
        index.insert(
            i,
            w.add_topic_with(
                &bt.name,
                &bt.type_name,
                &bt.offered_qos,
                bt.definition.clone(),
            )?,
        );
    }
    let mut n = 0;
    for msg in &bag.messages {
        if let Some(&i) = index.get(&msg.topic) {
            w.write(i, msg.log_time_ns, &msg.data)?;
            n += 1;
        }
    }
    w.close()?;
    Ok(n)
}

/// Renders the frames scenario's bag: `seconds` of the simulated camera
/// (the `sim` section of `params_file`) as sensor_msgs/Image messages.
pub fn render_frames(params_file: &Path, seconds_s: f64, to: &Path) -> Result<u64, String> {
    use crate::bag::writer::{BagWriter, Compression, WriterOptions};
    use crate::sim::cell::SimCore;
    use crate::sim::render::Renderer;
    let sim: crate::sim::params::SimParams = params(params_file, "sim")?;
    let cfg = sim.config()?;
    let mut renderer = Renderer::for_config(&cfg).map_err(|e| e.to_string())?;
    let fps = cfg.camera.fps;
    let mut core = SimCore::new(cfg);
    let mut w = BagWriter::create(
        to,
        WriterOptions {
            compression: Compression::Zstd,
            custom_data: vec![("sim_seed".into(), sim.seed.to_string())],
            ..WriterOptions::default()
        },
    )?;
    let topic = w.add_topic(
        IMAGES,
        "sensor_msgs/msg/Image",
        &[crate::bag::qos::Qos::default()],
    )?;
    // A fixed epoch: the frames' stamps, and so the vision ids, never change.
    const EPOCH_S: f64 = 1_767_225_600.0;
    let mut image = opencv::core::Mat::default();
    let mut n = 0;
    for k in 0..(seconds_s * fps).round() as u64 {
        let t = core.frame_time_s(k);
        let _ = core.advance_to(t);
        let (frame, drawn) = core.frame(k);
        if !frame.delivered {
            continue;
        }
        renderer
            .render(k, t, &drawn, &mut image)
            .map_err(|e| e.to_string())?;
        let f = crate::kit::frames::Frame {
            stamp: crate::kit::time::from_seconds(EPOCH_S + t),
            seq: k,
            frame_id: "camera".into(),
            image: image.clone(),
        };
        let msg = crate::kit::frames::image_msg(&f).map_err(|e| e.to_string())?;
        let data = msg.to_serialized_bytes().map_err(|e| e.to_string())?;
        w.write(topic, ((EPOCH_S + t) * 1e9) as u64, &data)?;
        n += 1;
    }
    w.close()?;
    Ok(n)
}
