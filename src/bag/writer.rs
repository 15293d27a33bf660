//! Writes rosbag2 bags: a folder of MCAP files (profile `ros2`, `ros2msg`
//! schemas, `cdr` channels with their offered QoS) and a metadata.yaml,
//! split by size or duration, with optional zstd or lz4 chunks.

use crate::bag::metadata::{self, BagInfo, File, Topic};
use crate::bag::qos::Qos;
use crate::bag::schema;
use std::collections::BTreeMap;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// MCAP chunk compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Zstd,
    Lz4,
}

impl Compression {
    pub fn parse(s: &str) -> Result<Compression, String> {
        match s {
            "" | "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            "lz4" => Ok(Compression::Lz4),
            other => Err(format!("compression {other:?}: use none, zstd or lz4")),
        }
    }

    fn mcap(self) -> Option<mcap::Compression> {
        match self {
            Compression::None => None,
            Compression::Zstd => Some(mcap::Compression::Zstd),
            Compression::Lz4 => Some(mcap::Compression::Lz4),
        }
    }
}

/// How a bag is written.
#[derive(Debug, Clone, Default)]
pub struct WriterOptions {
    /// Start a new file once the current one holds this many bytes (0: never).
    pub max_file_bytes: u64,
    /// Start a new file once the current one spans this long, ns (0: never).
    pub max_file_duration_ns: u64,
    pub compression: Compression,
    /// `custom_data` in metadata.yaml (e.g. the sim's seed).
    pub custom_data: Vec<(String, String)>,
}

/// Counts the bytes written (the file's size), for splitting.
struct Counting {
    inner: BufWriter<std::fs::File>,
    pos: u64,
    size: Arc<AtomicU64>,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        self.size.fetch_max(self.pos, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Seek for Counting {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.inner.seek(pos)?;
        Ok(self.pos)
    }
}

struct Open {
    mcap: mcap::Writer<Counting>,
    size: Arc<AtomicU64>,
    file: File,
    first_ns: Option<u64>,
    last_ns: u64,
    /// Our topic index → this file's channel id.
    channels: BTreeMap<usize, u16>,
    sequence: u32,
}

struct TopicEntry {
    meta: Topic,
    definition: String,
}

/// A bag being written. `close` finishes it; dropping it without closing
/// leaves the files readable up to the last chunk, with no metadata.yaml.
pub struct BagWriter {
    dir: PathBuf,
    stem: String,
    opts: WriterOptions,
    prefixes: Vec<PathBuf>,
    topics: Vec<TopicEntry>,
    open: Option<Open>,
    files: Vec<File>,
}

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

impl BagWriter {
    /// A new bag in `dir`, which must not exist yet (as `ros2 bag record -o`).
    pub fn create(dir: &Path, opts: WriterOptions) -> Result<BagWriter, String> {
        if dir.exists() {
            return Err(err(dir, "already exists; give a new folder"));
        }
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let stem = dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("bag")
            .to_string();
        Ok(BagWriter {
            dir: dir.to_path_buf(),
            stem,
            opts,
            prefixes: schema::prefixes_from_env(),
            topics: Vec::new(),
            open: None,
            files: Vec::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a topic; its definition must be installed. Returns its index.
    pub fn add_topic(
        &mut self,
        name: &str,
        type_name: &str,
        offered: &[Qos],
    ) -> Result<usize, String> {
        let full = schema::normalize(type_name)?;
        let definition = schema::definition(&self.prefixes, &full)?;
        self.add_topic_with(name, &full, offered, definition)
    }

    /// The publishers' offered QoS of a topic, learnt after it was added:
    /// in metadata.yaml, and in the channels of files that have not
    /// written the topic yet.
    pub fn set_offered(&mut self, topic: usize, offered: &[Qos]) {
        if let Some(t) = self.topics.get_mut(topic) {
            t.meta.offered_qos = offered.to_vec();
        }
    }

    /// As `add_topic`, with the definition given (e.g. copied from another bag).
    pub fn add_topic_with(
        &mut self,
        name: &str,
        type_name: &str,
        offered: &[Qos],
        definition: String,
    ) -> Result<usize, String> {
        if let Some(i) = self.topics.iter().position(|t| t.meta.name == name) {
            if self.topics[i].meta.type_name != type_name {
                return Err(format!(
                    "topic {name}: already recorded as {}, now offered as {type_name}",
                    self.topics[i].meta.type_name
                ));
            }
            return Ok(i);
        }
        self.topics.push(TopicEntry {
            meta: Topic {
                name: name.to_string(),
                type_name: type_name.to_string(),
                serialization_format: "cdr".into(),
                offered_qos: offered.to_vec(),
                type_hash: metadata::type_hash(&self.prefixes, type_name),
                message_count: 0,
            },
            definition,
        });
        Ok(self.topics.len() - 1)
    }

    fn channel(&mut self, topic: usize) -> Result<u16, String> {
        let open = self.open.as_mut().ok_or("no file open")?;
        if let Some(id) = open.channels.get(&topic) {
            return Ok(*id);
        }
        let t = &self.topics[topic];
        let path = self.dir.join(&open.file.path);
        let schema_id = open
            .mcap
            .add_schema(&t.meta.type_name, "ros2msg", t.definition.as_bytes())
            .map_err(|e| err(&path, e))?;
        let meta = BTreeMap::from([(
            "offered_qos_profiles".to_string(),
            crate::bag::qos::dump(&t.meta.offered_qos),
        )]);
        let id = open
            .mcap
            .add_channel(schema_id, &t.meta.name, "cdr", &meta)
            .map_err(|e| err(&path, e))?;
        open.channels.insert(topic, id);
        Ok(id)
    }

    fn start_file(&mut self) -> Result<(), String> {
        let name = format!("{}_{}.mcap", self.stem, self.files.len());
        let path = self.dir.join(&name);
        let f = std::fs::File::create(&path).map_err(|e| err(&path, e))?;
        let size = Arc::new(AtomicU64::new(0));
        let w = Counting {
            inner: BufWriter::with_capacity(1 << 20, f),
            pos: 0,
            size: size.clone(),
        };
        let mcap = mcap::WriteOptions::new()
            .profile("ros2")
            .library(concat!("cncpick-", env!("CARGO_PKG_VERSION"), "; mcap-rs"))
            .compression(self.opts.compression.mcap())
            // Chunks stay in memory until full: with a size limit, small
            // enough that the file's size follows what was written.
            .chunk_size(Some(match self.opts.max_file_bytes {
                0 => 4 << 20,
                max => (max / 8).clamp(1024, 4 << 20),
            }))
            .create(w)
            .map_err(|e| err(&path, e))?;
        self.open = Some(Open {
            mcap,
            size,
            file: File {
                path: name,
                start_ns: 0,
                duration_ns: 0,
                message_count: 0,
            },
            first_ns: None,
            last_ns: 0,
            channels: BTreeMap::new(),
            sequence: 0,
        });
        Ok(())
    }

    fn finish_file(&mut self) -> Result<(), String> {
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        let path = self.dir.join(&open.file.path);
        open.file.start_ns = open.first_ns.unwrap_or(0);
        open.file.duration_ns = open.last_ns.saturating_sub(open.file.start_ns);
        self.files.push(open.file.clone());
        // rosbag2's own record of the bag, in every file.
        let meta = mcap::records::Metadata {
            name: "rosbag2".into(),
            metadata: BTreeMap::from([
                ("serialized_metadata".to_string(), self.info().to_yaml()),
                ("ros_distro".to_string(), "jazzy".to_string()),
            ]),
        };
        open.mcap.write_metadata(&meta).map_err(|e| err(&path, e))?;
        open.mcap.finish().map_err(|e| err(&path, e))?;
        open.mcap.into_inner().flush().map_err(|e| err(&path, e))?;
        Ok(())
    }

    /// Writes one message (CDR bytes) received at `log_time_ns`.
    pub fn write(&mut self, topic: usize, log_time_ns: u64, data: &[u8]) -> Result<(), String> {
        if topic >= self.topics.len() {
            return Err(format!("topic index {topic} was never added"));
        }
        let split = self.open.as_ref().is_some_and(|o| {
            o.file.message_count > 0
                && ((self.opts.max_file_bytes > 0
                    && o.size.load(Ordering::Relaxed) >= self.opts.max_file_bytes)
                    || (self.opts.max_file_duration_ns > 0
                        && log_time_ns.saturating_sub(o.first_ns.unwrap_or(log_time_ns))
                            >= self.opts.max_file_duration_ns))
        });
        if split {
            self.finish_file()?;
        }
        if self.open.is_none() {
            self.start_file()?;
        }
        let channel_id = self.channel(topic)?;
        let open = self.open.as_mut().ok_or("no file open")?;
        open.sequence = open.sequence.wrapping_add(1);
        let header = mcap::records::MessageHeader {
            channel_id,
            sequence: open.sequence,
            log_time: log_time_ns,
            publish_time: log_time_ns,
        };
        open.mcap
            .write_to_known_channel(&header, data)
            .map_err(|e| err(&self.dir.join(&open.file.path), e))?;
        open.first_ns = Some(open.first_ns.map_or(log_time_ns, |f| f.min(log_time_ns)));
        open.last_ns = open.last_ns.max(log_time_ns);
        open.file.message_count += 1;
        self.topics[topic].meta.message_count += 1;
        Ok(())
    }

    /// The metadata as it stands.
    pub fn info(&self) -> BagInfo {
        let mut files = self.files.clone();
        if let Some(o) = &self.open {
            let start = o.first_ns.unwrap_or(0);
            files.push(File {
                start_ns: start,
                duration_ns: o.last_ns.saturating_sub(start),
                ..o.file.clone()
            });
        }
        let counted: Vec<&File> = files.iter().filter(|f| f.message_count > 0).collect();
        let start = counted.iter().map(|f| f.start_ns).min().unwrap_or(0);
        let end = counted
            .iter()
            .map(|f| f.start_ns + f.duration_ns)
            .max()
            .unwrap_or(start);
        BagInfo {
            version: metadata::VERSION,
            storage_identifier: "mcap".into(),
            start_ns: start,
            duration_ns: end - start,
            message_count: files.iter().map(|f| f.message_count).sum(),
            topics: self.topics.iter().map(|t| t.meta.clone()).collect(),
            compression_format: String::new(),
            compression_mode: String::new(),
            files,
            custom_data: self.opts.custom_data.clone(),
            ros_distro: "jazzy".into(),
        }
    }

    /// Finishes the last file and writes metadata.yaml.
    pub fn close(mut self) -> Result<BagInfo, String> {
        if self.open.is_none() && self.files.is_empty() {
            self.start_file()?; // an empty bag still has its file
        }
        self.finish_file()?;
        let info = self.info();
        let path = self.dir.join("metadata.yaml");
        std::fs::write(&path, info.to_yaml()).map_err(|e| err(&path, e))?;
        Ok(info)
    }
}
