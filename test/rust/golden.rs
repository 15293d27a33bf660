//! The golden-bag regression (test/golden): each bag replays through the
//! pure cores to exactly its golden decisions; the replayed tracker agrees
//! frame for frame with what the live tracker published in the recorded
//! run; and a single perturbed input changes a decision, which the check
//! names. Re-record with `cncpick golden rerecord`; accept a deliberate
//! change with `cncpick golden rewrite`.

use cncpick::bag::reader::{self, Bag};
use cncpick::bag::regress::{
    self, compare, files, live_agreement, read_golden, replay_cell, replay_frames,
};
use cncpick::msgs::msg as m;
use r2r::WrappedTypesupport;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test/golden")
}

fn open(name: &str) -> (Bag, PathBuf, PathBuf) {
    let (bag, params, decisions) = files(&golden_dir(), name);
    let bag = reader::open(&bag).expect("the golden bag opens");
    bag.sound().expect("the golden bag is sound");
    (bag, params, decisions)
}

#[test]
fn every_golden_bag_replays_to_its_golden_decisions() {
    let lines = regress::check(&golden_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lines.len(), 2, "{lines:?}");
}

#[test]
fn the_replayed_tracker_agrees_frame_for_frame_with_the_live_one() {
    let (bag, params, _) = open("cell");
    let got = replay_cell(&bag, &params).expect("replays");
    let a = live_agreement(&bag, &got).expect("decodes");
    assert!(a.frames > 100, "{a:?}");
    assert_eq!(
        a.frames_same, a.frames,
        "the live tracker published what the replay gives"
    );
    // The scheduler is replayed against the recorded world's answers, so
    // only some of its live assignments recur; at least one must.
    assert!(a.assignments > 0 && a.assignments_same > 0, "{a:?}");
}

/// The indexes in `bag.messages` of the messages on `topic`.
fn indexes_on<'a>(bag: &'a Bag, topic: &str) -> impl Iterator<Item = usize> + 'a {
    let t = bag.topic_index(topic).expect("the topic is in the bag");
    (0..bag.messages.len()).filter(move |&k| bag.messages[k].topic == t)
}

/// The cell bag with one detection moved 5 cm along the belt.
fn perturbed(bag: &Bag) -> Bag {
    let k = indexes_on(bag, regress::DETECTIONS)
        .find(|&k| {
            m::DetectionArray::from_serialized_bytes(&bag.messages[k].data)
                .is_ok_and(|d| !d.detections.is_empty())
        })
        .expect("a frame with a detection");
    let mut d = m::DetectionArray::from_serialized_bytes(&bag.messages[k].data).unwrap();
    d.detections[0].position.x += 0.05;
    let mut messages = bag.messages.clone();
    messages[k].data = d.to_serialized_bytes().unwrap();
    Bag {
        path: bag.path.clone(),
        info: bag.info.clone(),
        topics: bag.topics.clone(),
        messages,
        damage: Vec::new(),
    }
}

#[test]
fn one_moved_detection_changes_a_decision_and_the_check_names_it() {
    let (bag, params, decisions) = open("cell");
    let golden = read_golden(&decisions).expect("reads");
    let moved = perturbed(&bag);
    let got = replay_cell(&moved, &params).expect("replays");
    let err = compare(&decisions, &golden, &got).expect_err("a decision changed");
    assert!(err.starts_with("decision "), "{err}");
    assert!(err.contains("golden:") && err.contains("now:"), "{err}");
    assert!(
        err.contains("cell.decisions.jsonl:"),
        "names the line: {err}"
    );
    // And the untouched bag still agrees (the change came from the input).
    compare(&decisions, &golden, &replay_cell(&bag, &params).unwrap()).expect("unchanged");
}

#[test]
fn one_blanked_frame_changes_a_detection_decision() {
    let (bag, params, decisions) = open("frames");
    let golden = read_golden(&decisions).expect("reads");
    // The first frame with a detection, painted over with its first pixel.
    let first_seen = golden
        .iter()
        .filter(|d| d.get("detections").is_some())
        .position(|d| d["detections"].as_array().is_some_and(|a| !a.is_empty()))
        .expect("a frame with a detection");
    let k = indexes_on(&bag, regress::IMAGES).nth(first_seen).unwrap();
    let mut img =
        r2r::sensor_msgs::msg::Image::from_serialized_bytes(&bag.messages[k].data).unwrap();
    let bg: Vec<u8> = img.data[..3].to_vec();
    for px in img.data.chunks_mut(3) {
        px.copy_from_slice(&bg);
    }
    let mut messages = bag.messages.clone();
    messages[k].data = img.to_serialized_bytes().unwrap();
    let blanked = Bag {
        messages,
        ..reader::open(&bag.path).unwrap()
    };
    let got = replay_frames(&blanked, &params).expect("replays");
    let err = compare(&decisions, &golden, &got).expect_err("a decision changed");
    assert!(
        err.contains(&format!("decision {} of", 2 * first_seen + 1)),
        "{err}"
    );
}

#[test]
fn a_bad_golden_line_is_named_by_file_and_line() {
    let dir = std::env::temp_dir().join(format!("cncpick-golden-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("x.decisions.jsonl");
    std::fs::write(&f, "{\"t\": 1}\n{not json\n").unwrap();
    let e = read_golden(&f).unwrap_err();
    assert!(e.contains("x.decisions.jsonl:2:"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
