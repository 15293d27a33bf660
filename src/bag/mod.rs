//! rosbag2 bags with no rosbag2 installed: the MCAP storage with `ros2msg`
//! schemas and a metadata.yaml `ros2 bag info` reads (writer, reader that
//! survives damage, player timeline, and the recorder and player shells),
//! plus the golden-bag regression replay.

pub mod cli;
pub mod metadata;
pub mod node;
pub mod play;
pub mod qos;
pub mod reader;
pub mod regress;
pub mod schema;
pub mod writer;

use serde_json::json;

/// A bag's summary, as JSON: topics with types and counts, span, damage.
pub fn info_json(bag: &reader::Bag) -> serde_json::Value {
    let first = bag.messages.first().map(|m| m.log_time_ns).unwrap_or(0);
    let last = bag.messages.last().map(|m| m.log_time_ns).unwrap_or(first);
    json!({
        "path": bag.path.display().to_string(),
        "storage_identifier": "mcap",
        "messages": bag.messages.len(),
        "start_ns": first,
        "duration_ns": last - first,
        "topics": bag.topics.iter().enumerate().map(|(i, t)| json!({
            "name": t.name,
            "type": t.type_name,
            "messages": bag.messages.iter().filter(|m| m.topic == i).count(),
            "offered_qos_profiles": t.offered_qos.len(),
        })).collect::<Vec<_>>(),
        "files": bag.info.as_ref().map(|i| i.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>()),
        "damage": bag.damage.iter().map(|d| json!({
            "file": d.file.display().to_string(),
            "offset": d.offset,
            "what": d.what,
        })).collect::<Vec<_>>(),
    })
}

/// A bag's summary as `ros2 bag info` prints it.
pub fn info_text(bag: &reader::Bag) -> String {
    let first = bag.messages.first().map(|m| m.log_time_ns).unwrap_or(0);
    let last = bag.messages.last().map(|m| m.log_time_ns).unwrap_or(first);
    let mut out = format!(
        "Files:             {}\nStorage id:        mcap\nDuration:          {:.3}s\nMessages:          {}\nTopic information:\n",
        bag.info
            .as_ref()
            .map(|i| i.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| bag.path.display().to_string()),
        (last - first) as f64 / 1e9,
        bag.messages.len()
    );
    for (i, t) in bag.topics.iter().enumerate() {
        out += &format!(
            "  Topic: {} | Type: {} | Count: {} | Serialization Format: cdr\n",
            t.name,
            t.type_name,
            bag.messages.iter().filter(|m| m.topic == i).count()
        );
    }
    if !bag.damage.is_empty() {
        out += &format!(
            "Damage:            {} places (the messages above are what could be read)\n",
            bag.damage.len()
        );
    }
    out
}
