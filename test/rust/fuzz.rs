//! Fuzzing of what cncpick reads from outside: the GRBL replies on the
//! serial line, params files, rosbag2 bags (MCAP and metadata.yaml), and
//! CDR-encoded messages. Inputs are valid samples (the corpus) mutated at
//! random: bits flipped, bytes inserted, deleted, repeated or set to
//! boundary values, the input cut short, two samples spliced; and plain
//! random bytes. The property is the same everywhere: no panic, no crash;
//! an error is an answer. The bag reader's has a second: bytes changed in
//! place never give a message that was not written.
//!
//! In the test command each target runs a few hundred cases. The long runs
//! are `scripts/fuzz [SECONDS] [TARGET...]` (CNCPICK_FUZZ_S: run each
//! target this long; CNCPICK_FUZZ_SEED: the seed, printed at the start so
//! a failure can be run again). A failure is shrunk to a small input and
//! printed.

mod common;

use cncpick::bag::writer::{BagWriter, Compression, WriterOptions};
use cncpick::kit::params::{load, NodeParams, RosArgs};
use cncpick::msgs::msg as m;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use r2r::WrappedTypesupport;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Repeat {
        at: usize,
        len: usize,
    },
    Boundary {
        at: usize,
        value: u32,
        width: usize,
    },
    Cut {
        at: usize,
    },
    Splice {
        at: usize,
        other: usize,
        from: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let boundary = prop::sample::select(vec![
        0u32,
        1,
        0x7f,
        0x80,
        0xff,
        0x7fff,
        0xffff,
        0x7fff_ffff,
        0xffff_fffe,
        0xffff_ffff,
    ]);
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Repeat { at, len }),
        (
            any::<usize>(),
            boundary,
            prop::sample::select(vec![1usize, 2, 4, 8])
        )
            .prop_map(|(at, value, width)| Mutation::Boundary { at, value, width }),
        any::<usize>().prop_map(|at| Mutation::Cut { at }),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(at, other, from)| Mutation::Splice { at, other, from }),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation], corpus: &[Vec<u8>]) -> Vec<u8> {
    for mu in muts {
        let n = b.len();
        let pos = |at: usize| if n == 0 { 0 } else { at % (n + 1) };
        match mu {
            Mutation::Flip { at, bit } if n > 0 => b[at % n] ^= 1 << bit,
            Mutation::Insert { at, bytes } => {
                let p = pos(*at);
                b.splice(p..p, bytes.iter().copied());
            }
            Mutation::Delete { at, len } if n > 0 => {
                let p = at % n;
                b.drain(p..(p + len).min(n));
            }
            Mutation::Repeat { at, len } if n > 0 => {
                let p = at % n;
                let piece: Vec<u8> = b[p..(p + len).min(n)].to_vec();
                b.splice(p..p, piece);
            }
            Mutation::Boundary { at, value, width } if n >= *width => {
                let p = at % (n - width + 1);
                b[p..p + width].copy_from_slice(&value.to_le_bytes().repeat(2)[..*width]);
            }
            Mutation::Cut { at } => b.truncate(pos(*at)),
            Mutation::Splice { at, other, from } => {
                let o = &corpus[other % corpus.len()];
                let f = if o.is_empty() { 0 } else { from % o.len() };
                b.truncate(pos(*at));
                b.extend_from_slice(&o[f..]);
            }
            _ => {}
        }
    }
    b
}

/// One input: its bytes, and the sample they came from when every
/// mutation changed bytes in place (flips, boundary values: none moved,
/// added or taken away).
#[derive(Debug, Clone)]
struct Case {
    bytes: Vec<u8>,
    in_place_of: Option<usize>,
}

/// Samples mutated, or (one case in eight) random bytes.
fn inputs(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Case> {
    prop_oneof![
        7 => (0..corpus.len(), prop::collection::vec(mutation(), 1..8))
            .prop_map(move |(k, muts)| Case {
                in_place_of: muts
                    .iter()
                    .all(|m| matches!(m, Mutation::Flip { .. } | Mutation::Boundary { .. }))
                    .then_some(k),
                bytes: apply(corpus[k].clone(), &muts, &corpus),
            }),
        1 => prop::collection::vec(any::<u8>(), 0..512)
            .prop_map(|bytes| Case { bytes, in_place_of: None }),
    ]
}

/// Runs `target` on inputs from `corpus`: CNCPICK_FUZZ_S seconds, or
/// `cases` cases when unset. A panic in `target` fails the case.
fn fuzz(name: &str, corpus: Vec<Vec<u8>>, cases: u32, target: impl Fn(&Case)) {
    assert!(!corpus.is_empty(), "{name}: no corpus");
    let seconds: Option<f64> = std::env::var("CNCPICK_FUZZ_S")
        .ok()
        .and_then(|s| s.parse().ok());
    let seed: u64 = std::env::var("CNCPICK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let batch = if seconds.is_some() { 500 } else { cases };
    let strategy = inputs(corpus);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds.unwrap_or(0.0));
    let total = std::cell::Cell::new(0u64);
    eprintln!("fuzz {name}: seed {seed} (CNCPICK_FUZZ_SEED={seed} to run these cases again)");
    // A runner per batch (one runs its cases once), each seeded from the
    // seed and the batch's number, so a failure can be run again.
    for k in 0u64.. {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&k.to_le_bytes());
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: batch,
                failure_persistence: None,
                max_shrink_iters: 2000,
                ..Config::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &key),
        );
        let r = runner.run(&strategy, |input| {
            total.set(total.get() + 1);
            target(&input);
            Ok(())
        });
        if let Err(e) = r {
            panic!(
                "fuzz {name}: seed {seed}, batch {k}, after {} cases: {e}",
                total.get()
            );
        }
        if seconds.is_none() || Instant::now() >= until {
            break;
        }
    }
    let total = total.get();
    let s = started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {name}: {total} cases in {s:.0} s ({:.0}/s), no panic, no crash",
        total as f64 / s.max(1e-9)
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn grbl_replies() {
    let corpus: Vec<Vec<u8>> = [
        "ok",
        "error:20",
        "ALARM:1",
        "[MSG:Reset to continue]",
        "[MSG:'$H'|'$X' to unlock]",
        "Grbl 1.1h ['$' for help]",
        "<Idle|MPos:-10.000,-20.000,-5.000|FS:0,0|WCO:0.000,0.000,0.000>",
        "<Run|WPos:1.5,2.5,3.5|Bf:15,128|FS:500,0|Pn:P|Ov:100,100,100|A:F>",
        "<Hold:0|MPos:0.000,0.000,0.000|FS:0,0|Ln:99999>",
        "<Alarm|MPos:-650.000,-800.000,-150.000|F:0>",
        "$130=650.000",
        "[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]",
        "[VER:1.1h.20190830:]",
        "[OPT:V,15,128]",
        "[PRB:0.000,0.000,0.000:0]",
        "[echo:G1X1]",
        ">G1X10:ok",
        "G1 X-10.000 Y-20.000 F3000",
    ]
    .iter()
    .map(|s| format!("{s}\r\n").into_bytes())
    .collect();
    fuzz("grbl_replies", corpus, 2000, |case| {
        // As the client reads them: lossy text, one line at a time.
        let text = String::from_utf8_lossy(&case.bytes);
        for line in text.split(['\n', '\r']) {
            let _ = cncpick::motion::grbl::reply::parse(line);
            let _ = cncpick::motion::grbl::reply::parse_status(line);
            let _ = cncpick::motion::grbl::stream::check_line(line);
        }
    });
}

fn load_all(path: &Path) {
    let args = RosArgs {
        params_files: vec![path.to_path_buf()],
        ..RosArgs::default()
    };
    fn one<P: NodeParams>(args: &RosArgs, fqn: &str) {
        if let Ok(p) = load::<P>(fqn, args, |_| None) {
            let _ = p.validate();
        }
    }
    one::<cncpick::sim::params::SimParams>(&args, "/cell/sim");
    one::<cncpick::camera::params::CameraParams>(&args, "/cell/camera");
    one::<cncpick::detector::params::DetectorParams>(&args, "/cell/detector");
    one::<cncpick::tracker::params::TrackerParams>(&args, "/cell/tracker");
    one::<cncpick::state::params::StateParams>(&args, "/cell/state_manager");
    one::<cncpick::motion::params::MotionParams>(&args, "/cell/cnc_1");
    one::<cncpick::sched::params::SchedParams>(&args, "/cell/scheduler");
    one::<cncpick::manager::params::ManagerParams>(&args, "/cell/manager");
    // And the checks across nodes.
    if let Ok(cell) = cncpick::cell::spec::CellArgs::new(vec![path.to_path_buf()], &[]) {
        let _ = cncpick::cell::spec::check(&cell);
    }
}

#[test]
fn params_files() {
    let mut corpus = Vec::new();
    for f in [
        "params/sim.yaml",
        "params/cell.yaml",
        "test/golden/cell.yaml",
    ] {
        corpus.push(std::fs::read(repo().join(f)).unwrap());
    }
    for e in std::fs::read_dir(repo().join("params/load")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            corpus.push(std::fs::read(p).unwrap());
        }
    }
    let dir = common::temp_dir("fuzz", "params");
    let path = dir.join("params.yaml");
    fuzz("params_files", corpus, 150, |case| {
        std::fs::write(&path, &case.bytes).unwrap();
        load_all(&path);
    });
}

/// Small bags of every compression, plus the golden camera bag.
fn bag_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (k, compression) in [Compression::None, Compression::Zstd, Compression::Lz4]
        .into_iter()
        .enumerate()
    {
        let d = dir.join(format!("seed{k}"));
        let mut w = BagWriter::create(
            &d,
            WriterOptions {
                compression,
                ..WriterOptions::default()
            },
        )
        .unwrap();
        let ev = w
            .add_topic("/cell/objects/events", "cncpick_msgs/msg/ObjectEvent", &[])
            .unwrap();
        let st = w
            .add_topic("/cell/tracks", "cncpick_msgs/msg/TrackArray", &[])
            .unwrap();
        for i in 0..12u64 {
            let e = m::ObjectEvent {
                seq: i,
                vision_id: format!("vision_{i}_0_0"),
                ..m::ObjectEvent::default()
            };
            w.write(ev, 1_000 + i * 10, &e.to_serialized_bytes().unwrap())
                .unwrap();
            let t = m::TrackArray::default();
            w.write(st, 1_005 + i * 10, &t.to_serialized_bytes().unwrap())
                .unwrap();
        }
        w.close().unwrap();
        out.push(std::fs::read(d.join(format!("seed{k}_0.mcap"))).unwrap());
    }
    out.push(std::fs::read(repo().join("test/golden/frames/frames_0.mcap")).unwrap());
    out
}

/// A message as read: its topic, log time (ns) and data.
use common::Read;

/// Reads `bytes` as the bag `dir` holds them (its one file, under the
/// sample's sound metadata.yaml): each message's topic, log time, data.
fn read_bag(
    dir: &Path,
    bytes: &[u8],
    metadata: &[u8],
) -> Result<(cncpick::bag::reader::Bag, Vec<Read>), String> {
    std::fs::write(dir.join("case_0.mcap"), bytes).unwrap();
    std::fs::write(
        dir.join("metadata.yaml"),
        String::from_utf8_lossy(metadata).replace("seed0_0.mcap", "case_0.mcap"),
    )
    .unwrap();
    let b = cncpick::bag::reader::open(dir)?;
    let read = common::messages_of(&b);
    Ok((b, read))
}

/// No panic; and bytes changed in place (no byte moved, added or taken
/// away) never give a message the sample did not hold: every chunk is
/// checked by its CRC, and a file whose bytes are all there is never
/// taken for a cut one.
#[test]
fn bag_reader() {
    let dir = common::temp_dir("fuzz", "bags");
    let corpus = bag_corpus(&dir);
    let metadata = std::fs::read(dir.join("seed0/metadata.yaml")).unwrap();
    let bag = dir.join("case");
    std::fs::create_dir_all(&bag).unwrap();
    // Each sample's messages, read whole and sound.
    let held: Vec<std::collections::HashSet<Read>> = corpus
        .iter()
        .enumerate()
        .map(|(k, bytes)| {
            let (b, read) = read_bag(&bag, bytes, &metadata).unwrap();
            assert_eq!(b.sound(), Ok(()), "sample {k}");
            assert!(!read.is_empty(), "sample {k} holds no message");
            read.into_iter().collect()
        })
        .collect();
    assert_eq!(
        held[0].len(),
        24,
        "the first sample's 12 events and 12 track arrays"
    );
    fuzz("bag_reader", corpus, 150, |case| {
        // The MCAP file mutated, under a sound metadata.yaml; and the
        // metadata.yaml mutated (with the same bytes), over no file.
        let bytes = &case.bytes[..];
        if let Ok((b, read)) = read_bag(&bag, bytes, &metadata) {
            let _ = b.sound();
            // What was read is decoded as the player and `bag score` do.
            for msg in &b.messages {
                let _ = m::ObjectEvent::from_serialized_bytes(&msg.data);
            }
            if let Some(k) = case.in_place_of {
                if let Some((topic, log_time_ns, _)) = read.iter().find(|r| !held[k].contains(*r)) {
                    panic!("a message sample {k} never held: {topic} at {log_time_ns} ns");
                }
            }
        }
        let mut meta = metadata.clone();
        meta.extend_from_slice(&bytes[..bytes.len().min(256)]);
        std::fs::write(bag.join("metadata.yaml"), &meta).unwrap();
        let _ = cncpick::bag::reader::open(&bag);
    });
}

/// A message that cannot be decoded is an error, and leaves rcutils'
/// error state clear: left set, every later failure printed a warning on
/// stderr that it was overwritten (12.7 GB of log in five minutes of
/// `message_decoding`; the r2r patch in third_party/r2r/PATCHES.md).
#[test]
fn a_failed_decode_is_an_error_and_leaves_no_error_state() {
    let good = m::ObjectEvent {
        vision_id: "vision_1_0_0".into(),
        ..m::ObjectEvent::default()
    }
    .to_serialized_bytes()
    .unwrap();
    for bad in [&good[..good.len() / 2], &[0xff; 3][..]] {
        assert!(m::ObjectEvent::from_serialized_bytes(bad).is_err());
        assert!(
            !unsafe { r2r_rcl::rcutils_error_is_set() },
            "rcutils' error state left set after a failed decode"
        );
    }
    // And a good message still decodes.
    let back = m::ObjectEvent::from_serialized_bytes(&good).unwrap();
    assert_eq!(back.vision_id, "vision_1_0_0");
}

/// Every cncpick message type, decoded from mutated CDR.
#[test]
fn message_decoding() {
    let mut truth = m::Truth::default();
    truth.objects.push(m::TruthObject {
        class_id: "red_box".into(),
        ..m::TruthObject::default()
    });
    truth.events.push(m::TruthEvent {
        detail: "grbl_alarm".into(),
        ..m::TruthEvent::default()
    });
    let mut dets = m::DetectionArray::default();
    dets.detections.push(m::Detection {
        vision_id: "vision_1_0_0".into(),
        ..m::Detection::default()
    });
    let mut tracks = m::TrackArray::default();
    tracks.tracks.push(m::Track::default());
    let corpus: Vec<Vec<u8>> = vec![
        truth.to_serialized_bytes().unwrap(),
        dets.to_serialized_bytes().unwrap(),
        tracks.to_serialized_bytes().unwrap(),
        m::ObjectEvent::default().to_serialized_bytes().unwrap(),
        m::CncStatus::default().to_serialized_bytes().unwrap(),
        m::CellMetrics::default().to_serialized_bytes().unwrap(),
        m::PickResult::default().to_serialized_bytes().unwrap(),
        m::Alert::default().to_serialized_bytes().unwrap(),
        m::Heartbeat::default().to_serialized_bytes().unwrap(),
        m::Assignment::default().to_serialized_bytes().unwrap(),
    ];
    fuzz("message_decoding", corpus, 1000, |case| {
        let bytes = &case.bytes[..];
        macro_rules! all {
            ($($t:ty),*) => { $( let _ = <$t>::from_serialized_bytes(bytes); )* };
        }
        all!(
            m::Alert,
            m::Assignment,
            m::BeltSpeed,
            m::CellMetrics,
            m::CncMetrics,
            m::CncStatus,
            m::Detection,
            m::DetectionArray,
            m::Heartbeat,
            m::LaneMetrics,
            m::NodeMetrics,
            m::ObjectEvent,
            m::ObjectRecord,
            m::ObjectState,
            m::PickOutcome,
            m::PickResult,
            m::Track,
            m::TrackArray,
            m::Truth,
            m::TruthEvent,
            m::TruthObject
        );
    });
}
