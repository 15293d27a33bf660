//! rosbag2 bags without DDS: the writer and reader round trip (every
//! compression, split files), metadata.yaml's fields, damage reported by
//! file and offset with everything before it read, and the player's
//! timeline on a fake clock.

mod common;

use cncpick::bag::metadata::BagInfo;
use cncpick::bag::play::{parse_remap, playlist, PlayOptions, Timeline};
use cncpick::bag::qos::{self, Qos};
use cncpick::bag::reader;
use cncpick::bag::schema;
use cncpick::bag::writer::{BagWriter, Compression, WriterOptions};
use cncpick::msgs::msg as m;
use common::messages_of;
use proptest::prelude::*;
use r2r::WrappedTypesupport;
use std::path::{Path, PathBuf};

/// A bag folder not yet made (the writer makes it), in a scratch folder
/// that goes when the first is dropped.
fn tmp(name: &str) -> (common::Scratch, PathBuf) {
    let scratch = common::temp_dir("bags", name);
    let bag = scratch.join("bag");
    (scratch, bag)
}

/// A detection message, different for each `i`.
fn detections(i: u32) -> Vec<u8> {
    let mut msg = m::DetectionArray {
        frame_seq: u64::from(i),
        ..Default::default()
    };
    msg.header.stamp.sec = 100 + i as i32;
    for k in 0..(i % 4) {
        msg.detections.push(m::Detection {
            class_id: format!("class_{k}"),
            confidence: 0.5 + k as f32 / 10.0,
            lane: k as u8,
            ..Default::default()
        });
    }
    msg.to_serialized_bytes().expect("serializes")
}

fn text(i: u32) -> Vec<u8> {
    r2r::std_msgs::msg::String {
        data: format!("message {i}"),
    }
    .to_serialized_bytes()
    .expect("serializes")
}

const T0_NS: u64 = 1_700_000_000_000_000_000;

/// Writes `n` messages on two topics, 10 ms apart; returns what was written.
fn write_bag(dir: &Path, n: u32, opts: WriterOptions) -> (BagInfo, Vec<(String, u64, Vec<u8>)>) {
    let mut w = BagWriter::create(dir, opts).expect("creates");
    let reliable = Qos {
        durability: 1,
        depth: 1000,
        ..Qos::default()
    };
    let a = w
        .add_topic(
            "/cell/detections",
            "cncpick_msgs/msg/DetectionArray",
            &[Qos::default()],
        )
        .expect("a known type");
    let b = w
        .add_topic("/cell/chatter", "std_msgs/String", &[reliable])
        .expect("a known type");
    let mut written = Vec::new();
    for i in 0..n {
        let t = T0_NS + u64::from(i) * 10_000_000;
        let (topic, name, data) = if i % 3 == 0 {
            (b, "/cell/chatter", text(i))
        } else {
            (a, "/cell/detections", detections(i))
        };
        w.write(topic, t, &data).expect("writes");
        written.push((name.to_string(), t, data));
    }
    (w.close().expect("closes"), written)
}

#[test]
fn a_bag_reads_back_equal_with_every_compression() {
    for c in [Compression::None, Compression::Zstd, Compression::Lz4] {
        let (_scratch, dir) = tmp(&format!("roundtrip-{c:?}"));
        let (info, written) = write_bag(
            &dir,
            300,
            WriterOptions {
                compression: c,
                ..WriterOptions::default()
            },
        );
        let bag = reader::open(&dir).expect("opens");
        bag.sound().expect("no damage");
        assert_eq!(messages_of(&bag), written, "{c:?}");
        // Decodes to the message that was written.
        let first = bag.on("/cell/detections").next().expect("a detection");
        let msg = m::DetectionArray::from_serialized_bytes(&first.data).expect("decodes");
        assert_eq!(msg.frame_seq, 1);
        assert_eq!(info.files.len(), 1);
    }
}

#[test]
fn metadata_yaml_has_every_field_ros2_bag_reads() {
    let (_dir_scratch, dir) = tmp("metadata");
    let (_, written) = write_bag(&dir, 30, WriterOptions::default());
    let text = std::fs::read_to_string(dir.join("metadata.yaml")).expect("written");
    let info = BagInfo::parse(&text).expect("parses");
    assert_eq!(info.version, 8);
    assert_eq!(info.storage_identifier, "mcap");
    assert_eq!(info.ros_distro, "jazzy");
    assert_eq!(info.message_count, 30);
    assert_eq!(info.start_ns, T0_NS);
    assert_eq!(info.duration_ns, 29 * 10_000_000);
    let chatter = info
        .topics
        .iter()
        .find(|t| t.name == "/cell/chatter")
        .expect("listed");
    assert_eq!(chatter.type_name, "std_msgs/msg/String");
    assert_eq!(chatter.serialization_format, "cdr");
    assert_eq!(
        chatter.message_count,
        written.iter().filter(|w| w.0 == "/cell/chatter").count() as u64
    );
    assert_eq!(chatter.offered_qos.len(), 1);
    assert_eq!(chatter.offered_qos[0].durability, 1, "transient_local kept");
    assert_eq!(chatter.offered_qos[0].depth, 1000);
    assert!(
        chatter.type_hash.starts_with("RIHS01_"),
        "{}",
        chatter.type_hash
    );
    assert_eq!(info.files.len(), 1);
    assert_eq!(
        info.files[0].path,
        format!("{}_0.mcap", dir.file_name().unwrap().to_string_lossy())
    );
    assert!(dir.join(&info.files[0].path).is_file());
    for key in [
        "relative_file_paths",
        "topics_with_message_count",
        "offered_qos_profiles",
        "compression_format",
        "compression_mode",
        "starting_time",
        "nanoseconds_since_epoch",
    ] {
        assert!(text.contains(key), "metadata.yaml lacks {key}");
    }
}

#[test]
fn qos_learnt_after_subscribing_goes_into_the_bag() {
    let (_dir_scratch, dir) = tmp("late-qos");
    let mut w = BagWriter::create(&dir, WriterOptions::default()).expect("creates");
    let t = w
        .add_topic("/cell/objects/events", "cncpick_msgs/msg/ObjectEvent", &[])
        .expect("a known type");
    let latched = Qos {
        durability: 1,
        depth: 1000,
        ..Qos::default()
    };
    w.set_offered(t, &[latched]);
    w.write(t, T0_NS, &text(0)).expect("writes");
    let info = w.close().expect("closes");
    assert_eq!(info.topics[0].offered_qos, vec![latched]);
    let bag = reader::open(&dir).expect("opens");
    assert_eq!(
        bag.topics[0].offered_qos,
        vec![latched],
        "in the channel too"
    );
}

#[test]
fn bags_split_by_size_and_by_duration_read_back_whole() {
    let (_by_size_scratch, by_size) = tmp("split-size");
    let (info, written) = write_bag(
        &by_size,
        400,
        WriterOptions {
            max_file_bytes: 8_000,
            ..WriterOptions::default()
        },
    );
    assert!(info.files.len() >= 3, "{} files", info.files.len());
    assert_eq!(info.files.iter().map(|f| f.message_count).sum::<u64>(), 400);
    let bag = reader::open(&by_size).expect("opens");
    bag.sound().expect("no damage");
    assert_eq!(messages_of(&bag), written);

    let (_by_time_scratch, by_time) = tmp("split-time");
    let (info, written) = write_bag(
        &by_time,
        100,
        WriterOptions {
            max_file_duration_ns: 250_000_000,
            ..WriterOptions::default()
        },
    );
    // 100 messages 10 ms apart, a new file every 250 ms: 4 files.
    assert_eq!(info.files.len(), 4);
    for f in &info.files {
        assert!(f.duration_ns < 250_000_000, "{f:?}");
    }
    let bag = reader::open(&by_time).expect("opens");
    assert_eq!(messages_of(&bag), written);
}

#[test]
fn the_schema_carries_every_nested_definition_once() {
    let def = schema::definition(
        &schema::prefixes_from_env(),
        "cncpick_msgs/msg/DetectionArray",
    )
    .expect("installed");
    for t in [
        "cncpick_msgs/msg/Detection",
        "std_msgs/msg/Header",
        "builtin_interfaces/msg/Time",
        "geometry_msgs/msg/Point",
        "unique_identifier_msgs/msg/UUID",
        "sensor_msgs/msg/RegionOfInterest",
    ] {
        assert_eq!(
            def.matches(&format!("\nMSG: {t}\n")).count(),
            1,
            "{t} in\n{def}"
        );
    }
    let err = schema::definition(&schema::prefixes_from_env(), "nope_msgs/msg/Thing").unwrap_err();
    assert!(err.contains("nope_msgs/msg/Thing"), "{err}");
}

/// The messages read from a damaged copy are the first ones written, equal.
fn is_prefix(read: &[(String, u64, Vec<u8>)], written: &[(String, u64, Vec<u8>)]) -> bool {
    read.len() <= written.len() && read == &written[..read.len()]
}

#[test]
fn a_truncated_bag_names_the_file_and_offset_and_keeps_what_precedes() {
    let (_dir_scratch, dir) = tmp("truncate");
    let (info, written) = write_bag(&dir, 2000, WriterOptions::default());
    let file = dir.join(&info.files[0].path);
    let whole = std::fs::read(&file).expect("reads");
    let (_cut_dir_scratch, cut_dir) = tmp("truncate-cut");
    std::fs::create_dir_all(&cut_dir).unwrap();
    let cut = cut_dir.join("cut.mcap");
    let mut last = 0;
    for frac in [0.05, 0.3, 0.5, 0.7, 0.9, 0.99] {
        let at = (whole.len() as f64 * frac) as usize;
        std::fs::write(&cut, &whole[..at]).unwrap();
        let bag = reader::open(&cut).expect("opens what it can");
        let d = bag.damage.first().expect("damage reported");
        assert_eq!(d.file, cut);
        assert!(d.offset <= at as u64, "{d}");
        assert!(d.to_string().contains("cut.mcap: offset"), "{d}");
        let read = messages_of(&bag);
        assert!(is_prefix(&read, &written), "cut at {at}");
        assert!(read.len() >= last, "more is read from a longer file");
        last = read.len();
    }
    assert!(
        last > 1000,
        "most of the file read before a cut at 99 %: {last}"
    );
}

#[test]
fn a_corrupt_chunk_is_named_and_skipped_and_the_rest_is_read() {
    let (_dir_scratch, dir) = tmp("corrupt");
    // Small files so there are several chunks... one chunk per file here.
    let (info, written) = write_bag(
        &dir,
        600,
        WriterOptions {
            max_file_bytes: 10_000,
            ..WriterOptions::default()
        },
    );
    assert!(info.files.len() >= 3);
    let victim = dir.join(&info.files[1].path);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[200] ^= 0x5a; // inside the first chunk's records
    std::fs::write(&victim, &bytes).unwrap();
    let bag = reader::open(&dir).expect("opens");
    assert_eq!(bag.damage.len(), 1, "{:?}", bag.damage);
    let d = &bag.damage[0];
    assert_eq!(d.file, victim);
    assert!(
        d.what.contains("CRC") || d.what.contains("bad record"),
        "{d}"
    );
    // The damaged chunk's messages are lost, and only they.
    let read = messages_of(&bag);
    let lost = written.len() - read.len();
    assert!(
        lost > 0 && lost < info.files[1].message_count as usize,
        "{lost} lost"
    );
    assert!(read.iter().all(|r| written.contains(r)));

    // A bad metadata.yaml: named, and the files are read anyway.
    std::fs::write(
        dir.join("metadata.yaml"),
        "rosbag2_bagfile_information:\n  version: [",
    )
    .unwrap();
    let bag = reader::open(&dir).expect("opens");
    assert!(
        bag.damage[0].file.ends_with("metadata.yaml"),
        "{}",
        bag.damage[0]
    );
    assert_eq!(bag.messages.len(), written.len() - lost);
}

#[test]
fn not_a_bag_is_a_clear_error() {
    let (_dir_scratch, dir) = tmp("not-a-bag");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("x.mcap");
    std::fs::write(&f, b"hello, this is not MCAP").unwrap();
    let bag = reader::open(&f).expect("opens");
    assert!(
        bag.damage[0]
            .to_string()
            .contains("x.mcap: offset 0: not an MCAP file"),
        "{}",
        bag.damage[0]
    );
    let e = reader::open(&dir.join("missing")).unwrap_err();
    assert!(e.contains("missing"), "{e}");
}

/// Writes a small bag and damages its one file with `damage`; returns
/// what was written and what is read back.
fn damaged(
    tag: &str,
    damage: impl FnOnce(&mut Vec<u8>),
) -> (Vec<(String, u64, Vec<u8>)>, reader::Bag) {
    let (_scratch, dir) = tmp(tag);
    let (info, written) = write_bag(
        &dir,
        50,
        WriterOptions {
            max_file_bytes: 4_000, // several chunks, each with its CRC
            ..WriterOptions::default()
        },
    );
    let file = dir.join(&info.files[0].path);
    let mut bytes = std::fs::read(&file).unwrap();
    damage(&mut bytes);
    std::fs::write(&file, &bytes).unwrap();
    let bag = reader::open(&file).expect("opens");
    (written, bag)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Flipped bytes anywhere: no panic, and every message read is one
    /// that was written, unchanged (chunks are checked against their CRC).
    #[test]
    fn flipped_bytes_never_give_a_message_that_was_not_written(
        flips in proptest::collection::vec((0.0f64..1.0, 1u8..=255), 1..4)
    ) {
        let tag = format!("flip-{}", (flips[0].0 * 1e12) as u64);
        let (written, bag) = damaged(&tag, |bytes| {
            for (at, x) in flips {
                let i = ((bytes.len() - 1) as f64 * at) as usize;
                bytes[i] ^= x;
            }
        });
        for r in messages_of(&bag) {
            prop_assert!(written.contains(&r), "a message never written: {:?}", r.1);
        }
    }

    /// Cut anywhere and flipped too: no panic, and the damage is reported.
    #[test]
    fn cut_and_flipped_files_never_panic(cut in 0.0f64..0.999, at in 0.0f64..1.0, x in 1u8..=255) {
        let tag = format!("cut-{}", (cut * 1e12) as u64);
        let (_, bag) = damaged(&tag, |bytes| {
            let i = ((bytes.len() - 1) as f64 * at) as usize;
            bytes[i] ^= x;
            bytes.truncate(((bytes.len() as f64) * cut) as usize);
        });
        prop_assert!(!bag.damage.is_empty());
    }
}

#[test]
fn qos_survives_metadata_both_ways_and_adapts_like_rosbag2() {
    let q = Qos {
        reliability: 2,
        durability: 1,
        depth: 5,
        deadline_ns: 1_500_000_000,
        ..Qos::default()
    };
    let text = qos::dump(&[q, Qos::default()]);
    let back = qos::parse(&serde_json::Value::String(text)).expect("parses");
    assert_eq!(back, vec![q, Qos::default()]);
    // Version 9's names.
    let v9 = serde_json::json!([{"history": "keep_last", "depth": 7, "reliability": "best_effort", "durability": "transient_local"}]);
    let p = qos::parse(&v9).expect("parses");
    assert_eq!(
        (p[0].history, p[0].depth, p[0].reliability, p[0].durability),
        (1, 7, 2, 1)
    );
    // Best effort if any publisher is; transient_local only if all are.
    let a = qos::adapted(&[q, Qos::default()], 10);
    assert_eq!(a.reliability, r2r::qos::ReliabilityPolicy::BestEffort);
    assert_eq!(a.durability, r2r::qos::DurabilityPolicy::Volatile);
    let b = qos::adapted(
        &[Qos {
            durability: 1,
            ..Qos::default()
        }],
        10,
    );
    assert_eq!(b.reliability, r2r::qos::ReliabilityPolicy::Reliable);
    assert_eq!(b.durability, r2r::qos::DurabilityPolicy::TransientLocal);
}

#[test]
fn the_timeline_keeps_the_bags_gaps_scaled_by_the_rate() {
    let s = 1_000_000_000u64;
    let mut t = Timeline::new(2.0, 10.0, 100 * s, false);
    assert_eq!(t.due_s(100 * s), Some(10.0));
    assert_eq!(
        t.due_s(104 * s),
        Some(12.0),
        "4 bag seconds at rate 2 take 2 s"
    );
    assert_eq!(t.bag_now(11.0), 102 * s);
    // Paused at 11 s: nothing is due; the bag's clock stands still.
    assert!(t.pause(11.0));
    assert!(!t.pause(11.5), "already paused");
    assert_eq!(t.due_s(104 * s), None);
    assert_eq!(t.bag_now(50.0), 102 * s);
    // Resumed 9 s later: what was 1 s away is 1 s away again.
    assert!(t.resume(20.0));
    assert_eq!(t.due_s(104 * s), Some(21.0));
    // A step while paused moves the pause to the message played.
    t.pause(20.5);
    t.stepped(106 * s);
    assert_eq!(t.bag_now(99.0), 106 * s);
    t.resume(30.0);
    assert_eq!(t.due_s(108 * s), Some(31.0));
    // A new rate from now on.
    t.set_rate(31.0, 1.0);
    assert_eq!(t.due_s(110 * s), Some(33.0));
    // Looping back to the start.
    t.restart(40.0, 100 * s);
    assert_eq!(t.due_s(101 * s), Some(41.0));
}

#[test]
fn the_bags_clock_stops_at_its_last_message() {
    let s = 1_000_000_000u64;
    let mut t = Timeline::new(2.0, 10.0, 100 * s, false).ending_at(103 * s);
    assert_eq!(t.bag_now(11.0), 102 * s);
    assert_eq!(t.bag_now(11.5), 103 * s);
    assert_eq!(t.bag_now(60.0), 103 * s, "not past the bag's end");
    // A loop back to the start runs the clock again, up to the end.
    t.restart(60.0, 100 * s);
    assert_eq!(t.bag_now(60.5), 101 * s);
    assert_eq!(t.bag_now(70.0), 103 * s);
}

#[test]
fn the_players_commands_pause_resume_toggle_and_step() {
    use cncpick::bag::play::{Answer, Command};
    let s = 1_000_000_000u64;
    let mut t = Timeline::new(1.0, 0.0, 10 * s, false);
    let ok = |m: &str| Answer::Reply {
        success: true,
        message: m.into(),
    };
    assert_eq!(
        t.command(1.0, Command::Next),
        Answer::Reply {
            success: false,
            message: "play_next works only while paused".into()
        }
    );
    assert_eq!(t.command(1.0, Command::Toggle), ok("paused"));
    assert_eq!(t.command(1.0, Command::IsPaused), ok(""));
    assert_eq!(t.command(2.0, Command::Next), Answer::PlayNext);
    assert_eq!(t.command(3.0, Command::Toggle), ok("playing"));
    assert!(matches!(
        t.command(3.0, Command::IsPaused),
        Answer::Reply { success: false, .. }
    ));
    assert!(matches!(
        t.command(3.0, Command::Resume),
        Answer::Reply { success: false, .. }
    ));
    assert_eq!(t.command(4.0, Command::Pause), ok("paused"));
    assert_eq!(t.command(5.0, Command::Resume), ok("playing"));
    // It played 0..1 s (bag 10..11 s) and 3..4 s (bag 11..12 s): bag
    // 12 s is where it paused, due as it resumed at 5 s; bag 13 s one second later.
    assert_eq!(t.due_s(12 * s), Some(5.0));
    assert_eq!(t.due_s(13 * s), Some(6.0));
}

#[test]
fn the_playlist_honours_the_start_offset_and_the_topic_filter() {
    let s = 1_000_000_000u64;
    let times = [10 * s, 11 * s, 12 * s, 13 * s, 14 * s];
    let topics = ["/a", "/b", "/a", "/b", "/a"];
    let all = playlist(&times, &topics, &PlayOptions::default());
    assert_eq!(all, vec![0, 1, 2, 3, 4]);
    let late = playlist(
        &times,
        &topics,
        &PlayOptions {
            start_offset_s: 2.0,
            ..PlayOptions::default()
        },
    );
    assert_eq!(late, vec![2, 3, 4]);
    let only_b = playlist(
        &times,
        &topics,
        &PlayOptions {
            topics: vec!["/b".into()],
            ..PlayOptions::default()
        },
    );
    assert_eq!(only_b, vec![1, 3]);
    let opts = PlayOptions {
        remap: vec![parse_remap("/a:=/x").unwrap()],
        ..PlayOptions::default()
    };
    assert_eq!(opts.published_name("/a"), "/x");
    assert_eq!(opts.published_name("/b"), "/b");
    assert!(parse_remap("/a").unwrap_err().contains("from:=to"));
    assert!(PlayOptions {
        rate: 0.0,
        ..PlayOptions::default()
    }
    .check()
    .unwrap_err()
    .contains("--rate"));
}

/// The first chunk record's offset in an MCAP file's bytes.
fn first_chunk(bytes: &[u8]) -> usize {
    let mut off = 8; // the magic
    while bytes[off] != 0x06 {
        let len = u64::from_le_bytes(bytes[off + 1..off + 9].try_into().unwrap());
        off += 9 + len as usize;
    }
    off
}

/// A chunk whose length field is damaged runs past the end of the file,
/// as a cut chunk does. But the file is whole (it still ends in the
/// magic), so the chunk is read only if its CRC holds: a byte changed in
/// its content as well must not give a message that was never written
/// (found by `flipped_bytes_never_give_a_message_that_was_not_written`).
#[test]
fn a_chunk_whose_length_is_damaged_is_read_only_if_its_crc_holds() {
    let (written, bag) = damaged("chunk-len-only", |bytes| {
        let at = first_chunk(bytes);
        bytes[at + 1 + 5] ^= 1; // its length, + 2^40
    });
    let read = messages_of(&bag);
    assert!(!read.is_empty(), "the sound chunk was not read");
    assert!(read.iter().all(|r| written.contains(r)));
    assert!(
        bag.damage[0].to_string().contains("truncated"),
        "{}",
        bag.damage[0]
    );

    let (written, bag) = damaged("chunk-len-and-content", |bytes| {
        let at = first_chunk(bytes);
        bytes[at + 1 + 5] ^= 1;
        bytes[at + 200] ^= 1; // in its records
    });
    let never: Vec<u64> = messages_of(&bag)
        .into_iter()
        .filter(|r| !written.contains(r))
        .map(|r| r.1)
        .collect();
    assert!(never.is_empty(), "messages never written, at {never:?}");
    let cannot_be_checked = |bag: &reader::Bag| {
        bag.damage
            .iter()
            .any(|d| d.to_string().contains("cannot be checked"))
    };
    assert!(cannot_be_checked(&bag), "{:?}", bag.damage);

    // Its uncompressed size damaged too, so its content looks cut short,
    // and the trailing magic as well: the footer before the magic still
    // says the file is whole, so the chunk is not taken for a cut one.
    let (written, bag) = damaged("chunk-len-size-content-and-magic", |bytes| {
        let at = first_chunk(bytes);
        bytes[at + 1 + 5] ^= 1;
        bytes[at + 9 + 16 + 5] ^= 1; // its uncompressed size, + 2^40
        bytes[at + 200] ^= 1;
        let end = bytes.len() - 1;
        bytes[end] ^= 1;
    });
    let never = messages_of(&bag)
        .into_iter()
        .filter(|r| !written.contains(r))
        .count();
    assert_eq!(never, 0, "messages never written");
    assert!(cannot_be_checked(&bag), "{:?}", bag.damage);
}
