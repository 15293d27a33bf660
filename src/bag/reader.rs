//! Reads rosbag2 MCAP bags, ours or anyone's, and keeps going past damage.
//!
//! The reader walks the MCAP records itself (framing: opcode, length,
//! body; chunks decompressed and checked against their CRC), and parses
//! each record with the `mcap` crate. A damaged record or chunk is
//! reported with its file and byte offset and skipped; a truncated file
//! ends the walk with an error at the offset where it breaks. Everything
//! before the damage is read.

use crate::bag::metadata::BagInfo;
use crate::bag::qos::{self, Qos};
use mcap::records::Record;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"\x89MCAP0\r\n";

/// Damage found while reading, at a file and byte offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Damage {
    pub file: PathBuf,
    pub offset: u64,
    pub what: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: offset {}: {}",
            self.file.display(),
            self.offset,
            self.what
        )
    }
}

/// A topic as the bag has it.
#[derive(Debug, Clone, PartialEq)]
pub struct BagTopic {
    pub name: String,
    /// `pkg/msg/Type`.
    pub type_name: String,
    pub offered_qos: Vec<Qos>,
    /// The schema text (`ros2msg`), as stored.
    pub definition: String,
}

/// One message: CDR bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct BagMessage {
    /// Index into `Bag::topics`.
    pub topic: usize,
    pub log_time_ns: u64,
    pub publish_time_ns: u64,
    pub data: Vec<u8>,
}

/// What could be read of a bag.
#[derive(Debug, Default)]
pub struct Bag {
    pub path: PathBuf,
    /// metadata.yaml, when there is one and it parses.
    pub info: Option<BagInfo>,
    pub topics: Vec<BagTopic>,
    /// In log-time order (ties: file order).
    pub messages: Vec<BagMessage>,
    /// Every piece of damage, in reading order; empty for a sound bag.
    pub damage: Vec<Damage>,
}

impl Bag {
    pub fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|t| t.name == name)
    }

    /// The messages of one topic.
    pub fn on<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a BagMessage> + 'a {
        let i = self.topic_index(name);
        self.messages.iter().filter(move |m| Some(m.topic) == i)
    }

    /// Ok when nothing was damaged; else every damage, one per line.
    pub fn sound(&self) -> Result<(), String> {
        if self.damage.is_empty() {
            Ok(())
        } else {
            Err(self
                .damage
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"))
        }
    }
}

#[derive(Default)]
struct FileRead {
    schemas: BTreeMap<u16, (String, String)>,
    /// Channel id → (topic, schema id, metadata).
    channels: BTreeMap<u16, (String, u16, BTreeMap<String, String>)>,
    messages: Vec<(u16, u64, u64, Vec<u8>)>,
    /// Past the data section: schemas and channels go to `summary`, used
    /// only once the footer's CRC of the summary checks out.
    in_summary: bool,
    summary: Option<Box<FileRead>>,
}

impl FileRead {
    /// Where schemas and channels read now go.
    fn table(&mut self) -> &mut FileRead {
        if self.in_summary {
            self.summary.get_or_insert_with(Box::default)
        } else {
            self
        }
    }

    /// Takes the summary's schemas and channels for ids the data section
    /// did not give (its own chunk may have been damaged).
    fn take_summary(&mut self) {
        if let Some(sum) = self.summary.take() {
            for (id, v) in sum.schemas {
                self.schemas.entry(id).or_insert(v);
            }
            for (id, v) in sum.channels {
                self.channels.entry(id).or_insert(v);
            }
        }
    }
}

/// Opens a bag folder (metadata.yaml and its files; without a usable
/// metadata.yaml, every *.mcap in it) or a single .mcap file. Fails only
/// when there is nothing to read at all.
pub fn open(path: &Path) -> Result<Bag, String> {
    let mut bag = Bag {
        path: path.to_path_buf(),
        ..Bag::default()
    };
    let files: Vec<PathBuf> = if path.is_dir() {
        let meta = path.join("metadata.yaml");
        if meta.is_file() {
            match BagInfo::read(path) {
                Ok(info) => bag.info = Some(info),
                Err(e) => bag.damage.push(Damage {
                    file: meta.clone(),
                    offset: 0,
                    what: format!("{e}; reading the folder's .mcap files instead"),
                }),
            }
        }
        match &bag.info {
            Some(info) if !info.files.is_empty() => {
                info.files.iter().map(|f| path.join(&f.path)).collect()
            }
            _ => {
                let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "mcap")
                            || p.to_string_lossy().ends_with(".mcap.zstd")
                    })
                    .collect();
                v.sort();
                v
            }
        }
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Err(format!(
            "{}: no such bag (a folder or an .mcap file)",
            path.display()
        ));
    };
    if files.is_empty() {
        return Err(format!("{}: no .mcap files in the bag", path.display()));
    }
    for f in &files {
        let read = read_file(f, &mut bag.damage);
        merge(&mut bag, read);
    }
    if let Some(info) = &bag.info {
        // metadata.yaml's QoS for topics whose channels carried none.
        for t in &mut bag.topics {
            if t.offered_qos.is_empty() {
                if let Some(m) = info.topics.iter().find(|m| m.name == t.name) {
                    t.offered_qos = m.offered_qos.clone();
                }
            }
        }
    }
    bag.messages.sort_by_key(|m| m.log_time_ns);
    Ok(bag)
}

fn merge(bag: &mut Bag, read: FileRead) {
    let mut index = BTreeMap::new();
    for (id, (topic, schema_id, meta)) in &read.channels {
        let (type_name, definition) = read.schemas.get(schema_id).cloned().unwrap_or_default();
        let i = match bag.topic_index(topic) {
            Some(i) => i,
            None => {
                bag.topics.push(BagTopic {
                    name: topic.clone(),
                    type_name: crate::bag::schema::normalize(&type_name).unwrap_or(type_name),
                    offered_qos: meta
                        .get("offered_qos_profiles")
                        .map(|s| {
                            qos::parse(&serde_json::Value::String(s.clone())).unwrap_or_default()
                        })
                        .unwrap_or_default(),
                    definition,
                });
                bag.topics.len() - 1
            }
        };
        index.insert(*id, i);
    }
    for (channel, log, publish, data) in read.messages {
        if let Some(&topic) = index.get(&channel) {
            bag.messages.push(BagMessage {
                topic,
                log_time_ns: log,
                publish_time_ns: publish,
                data,
            });
        }
    }
}

/// Reads one MCAP file; damage goes to `damage`.
fn read_file(path: &Path, damage: &mut Vec<Damage>) -> FileRead {
    let mut out = FileRead::default();
    let mut hurt = |offset: u64, what: String| {
        damage.push(Damage {
            file: path.to_path_buf(),
            offset,
            what,
        })
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            hurt(0, format!("cannot read: {e}"));
            return out;
        }
    };
    let bytes = if path.to_string_lossy().ends_with(".zstd") {
        match zstd::stream::decode_all(bytes.as_slice()) {
            Ok(b) => b,
            Err(e) => {
                hurt(0, format!("not a zstd-compressed file: {e}"));
                return out;
            }
        }
    } else {
        bytes
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        hurt(0, "not an MCAP file (no MCAP magic at the start)".into());
        return out;
    }
    walk(&bytes, MAGIC.len(), 0, &mut out, &mut hurt, true);
    out
}

/// Walks records from `start`; offsets are reported as `base + offset`.
/// Returns when the data section ends, the bytes end, or framing breaks.
fn walk(
    bytes: &[u8],
    start: usize,
    base: u64,
    out: &mut FileRead,
    sink: &mut dyn FnMut(u64, String),
    top: bool,
) {
    let mut off = start;
    // Inside a chunk, damage is reported at the chunk's offset, with the
    // position in its uncompressed content.
    let report = |sink: &mut dyn FnMut(u64, String), o: usize, what: String| {
        if top {
            sink(base + o as u64, what)
        } else {
            sink(
                base,
                format!("in the chunk, at byte {o} of its content: {what}"),
            )
        }
    };
    loop {
        if off == bytes.len() {
            if top {
                report(
                    sink,
                    off,
                    "the file ends here without its footer (truncated?)".into(),
                );
            }
            return;
        }
        if bytes.len() - off < 9 {
            report(
                sink,
                off,
                format!(
                    "truncated: {} bytes left, a record header needs 9",
                    bytes.len() - off
                ),
            );
            return;
        }
        let op = bytes[off];
        let len = u64::from_le_bytes(bytes[off + 1..off + 9].try_into().unwrap_or([0; 8]));
        let body_start = off + 9;
        let left = (bytes.len() - body_start) as u64;
        if len > left {
            report(
                    sink,
                off,
                format!("truncated: a record (opcode 0x{op:02x}) of {len} bytes, but only {left} follow"),
            );
            // What a cut chunk still holds: its records up to the cut. A
            // file that still ends in its footer or the magic was not cut:
            // its chunk's length is what is damaged, and the chunk is read
            // only if whole and sound by its CRC.
            if op == mcap::records::op::CHUNK {
                let cut = !ends_whole(bytes);
                match salvage_chunk(&bytes[body_start..], cut) {
                    Some(inner) => walk(&inner, 0, base + off as u64, out, sink, false),
                    None => report(
                        sink,
                        off,
                        "that chunk's content cannot be checked (its CRC fails, or it is cut in a file that is not); skipped".into(),
                    ),
                }
            }
            return;
        }
        let body = &bytes[body_start..body_start + len as usize];
        let (here, at) = (off, base + off as u64);
        off = body_start + len as usize;
        match mcap::parse_record(op, body) {
            Err(e) => report(
                sink,
                here,
                format!("a bad record (opcode 0x{op:02x}): {e}; skipped"),
            ),
            // The first record of an id wins: the summary section repeats
            // them, and a copy does not overrule what the data section said.
            Ok(Record::Schema { header, data }) => {
                out.table()
                    .schemas
                    .entry(header.id)
                    .or_insert((header.name, String::from_utf8_lossy(&data).into_owned()));
            }
            Ok(Record::Channel(c)) => {
                out.table()
                    .channels
                    .entry(c.id)
                    .or_insert((c.topic, c.schema_id, c.metadata));
            }
            Ok(Record::Message { header, data }) => out.messages.push((
                header.channel_id,
                header.log_time,
                header.publish_time,
                data.into_owned(),
            )),
            Ok(Record::Chunk { header, data }) => {
                match decompress(&header.compression, &data, header.uncompressed_size) {
                    Err(e) => report(
                        sink,
                        here,
                        format!("a chunk that cannot be decompressed: {e}; skipped"),
                    ),
                    Ok(inner) => {
                        let crc = crc32fast::hash(&inner);
                        if header.uncompressed_crc != 0 && crc != header.uncompressed_crc {
                            report(
                                sink,
                                here,
                                format!(
                                    "a chunk whose CRC is {crc:08x}, not {:08x} (corrupt); skipped",
                                    header.uncompressed_crc
                                ),
                            );
                        } else {
                            // Offsets inside a chunk are given in its uncompressed bytes.
                            walk(&inner, 0, at, out, sink, false);
                        }
                    }
                }
            }
            // The summary section follows the data end; its framing is
            // checked too, so a truncated summary or footer is reported.
            Ok(Record::DataEnd(_)) if top => out.in_summary = true,
            Ok(Record::Footer(f)) if top => {
                if bytes.len() - off != MAGIC.len() || &bytes[off..] != MAGIC {
                    report(
                        sink,
                        off,
                        "no MCAP magic after the footer (truncated or trailing bytes)".into(),
                    );
                }
                // The CRC covers the summary up to the footer's CRC field.
                let start = f.summary_start as usize;
                let end = off - 4;
                let sound = f.summary_crc == 0
                    || f.summary_start == 0
                    || (start <= end && crc32fast::hash(&bytes[start..end]) == f.summary_crc);
                if sound {
                    out.take_summary();
                } else {
                    report(
                        sink,
                        start,
                        "the summary section's CRC does not match (corrupt); its copies of schemas and channels are not used".into(),
                    );
                }
                return;
            }
            Ok(_) => {}
        }
    }
}

/// Whether `bytes` end as a whole MCAP file does: in the magic, or (the
/// magic itself damaged) in a footer record followed by eight bytes. A
/// file cut short ends in neither.
fn ends_whole(bytes: &[u8]) -> bool {
    // The footer: opcode, length 20, summary start and its offset (u64
    // each), summary CRC (u32); then the magic.
    const FOOTER_LEN: usize = 1 + 8 + 20;
    let footer_at = bytes.len().checked_sub(FOOTER_LEN + MAGIC.len());
    bytes.ends_with(MAGIC)
        || footer_at.is_some_and(|at| {
            bytes[at] == mcap::records::op::FOOTER && bytes[at + 1..at + 9] == 20u64.to_le_bytes()
        })
}

/// The content of a chunk whose record runs past the end of the bytes,
/// decompressed as far as it goes. If that reaches the chunk's whole
/// uncompressed size, only its length was wrong: the content is kept if
/// its CRC matches. If not, it is cut short: its records up to the cut,
/// which no CRC can check, are kept only if the file itself is `cut` (a
/// cut changes no byte before it).
fn salvage_chunk(body: &[u8], cut: bool) -> Option<Vec<u8>> {
    // start, end, uncompressed size (u64 each), CRC (u32), compression
    // (u32 length + text), records length (u64), records.
    let at = |i: usize, n: usize| body.get(i..i + n);
    let size = u64::from_le_bytes(at(16, 8)?.try_into().ok()?);
    let crc = u32::from_le_bytes(at(24, 4)?.try_into().ok()?);
    let name_len = u32::from_le_bytes(at(28, 4)?.try_into().ok()?) as usize;
    let compression = std::str::from_utf8(at(32, name_len)?).ok()?;
    let records = body.get(32 + name_len + 8..)?;
    let mut out = Vec::new();
    match compression {
        "" => out.extend_from_slice(records),
        "zstd" => {
            let mut d = zstd::stream::read::Decoder::new(records).ok()?;
            let mut buf = [0u8; 1 << 16];
            while let Ok(n) = std::io::Read::read(&mut d, &mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
        "lz4" => {
            let mut d = lz4::Decoder::new(records).ok()?;
            let mut buf = [0u8; 1 << 16];
            while let Ok(n) = std::io::Read::read(&mut d, &mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
        _ => return None,
    }
    if out.len() as u64 >= size {
        out.truncate(size as usize);
        return (crc == 0 || crc32fast::hash(&out) == crc).then_some(out);
    }
    cut.then_some(out)
}

fn decompress(compression: &str, data: &[u8], size: u64) -> Result<Vec<u8>, String> {
    let out = match compression {
        "" => data.to_vec(),
        "zstd" => zstd::stream::decode_all(data).map_err(|e| format!("zstd: {e}"))?,
        "lz4" => {
            let mut d = lz4::Decoder::new(data).map_err(|e| format!("lz4: {e}"))?;
            let mut v = Vec::with_capacity(size.min(1 << 30) as usize);
            std::io::Read::read_to_end(&mut d, &mut v).map_err(|e| format!("lz4: {e}"))?;
            v
        }
        other => return Err(format!("unknown compression {other:?}")),
    };
    if out.len() as u64 != size {
        return Err(format!("{} bytes, the chunk says {size}", out.len()));
    }
    Ok(out)
}
