//! The recorder and the player: thin r2r shells over the bag writer, the
//! reader and the player's timeline.
//!
//! The recorder subscribes to raw CDR bytes and hands each message to a
//! writer thread through a queue bounded in bytes, so writing never runs on
//! the spin thread or blocks a subscription; a full queue drops and counts.

use crate::bag::play::{playlist, Answer, Command, PlayOptions, Timeline};
use crate::bag::qos::{self, Qos};
use crate::bag::reader::{self, Bag};
use crate::bag::writer::{BagWriter, Compression, WriterOptions};
use crate::kit::app::{shutdown_signal, stop_tasks, RunningNode};
use crate::kit::spin::SharedNode;
use futures::StreamExt;
use r2r::std_srvs::srv::Trigger;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What to record, and how.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub output: PathBuf,
    /// Topics by name (each recorded once it appears in the graph).
    pub topics: Vec<String>,
    /// Topics whose type is known beforehand (`pkg/msg/Type`): subscribed
    /// at once, before any publisher appears, so nothing published after
    /// the recorder starts is missed while discovery runs.
    pub known: Vec<(String, String)>,
    /// Every cncpick topic: everything under /cell and /sim (actions' hidden
    /// topics aside).
    pub all_cell_topics: bool,
    /// Topics never recorded.
    pub exclude: Vec<String>,
    /// Types never recorded (`pkg/msg/Type`; e.g. images in a long run).
    pub exclude_types: Vec<String>,
    pub writer: WriterOptions,
    /// Stop after this long (None: at Ctrl-C or SIGTERM).
    pub duration_s: Option<f64>,
    /// How often the graph is looked at for new topics.
    pub discovery_period_s: f64,
    /// Messages waiting for the writer, at most this many bytes; more are dropped.
    pub queue_max_bytes: u64,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            output: PathBuf::new(),
            topics: Vec::new(),
            known: Vec::new(),
            all_cell_topics: false,
            exclude: Vec::new(),
            exclude_types: Vec::new(),
            writer: WriterOptions::default(),
            duration_s: None,
            discovery_period_s: 0.25,
            queue_max_bytes: 1 << 30,
        }
    }
}

/// The recorder's subscription depth: a burst this long is taken from DDS
/// and queued for the writer without loss (the queue itself is bounded in
/// bytes).
const RECORD_DEPTH: usize = 1000;

/// Whether `--all` records a topic.
pub fn is_cell_topic(name: &str) -> bool {
    (name.starts_with("/cell/") || name.starts_with("/sim/")) && !name.contains("/_action/")
}

/// What a recording did.
#[derive(Debug, Clone, Default)]
pub struct RecordSummary {
    pub info: crate::bag::metadata::BagInfo,
    pub messages: u64,
    pub bytes: u64,
    pub dropped: u64,
    /// From the first message to the last, s.
    pub span_s: f64,
}

/// The messages the recorder has taken: how many, first and last receive time.
#[derive(Debug, Clone, Copy, Default)]
struct Heard {
    first_ns: Option<u64>,
    last_ns: u64,
    count: u64,
}

enum ToWriter {
    Topic {
        name: String,
        type_name: String,
        offered: Vec<Qos>,
    },
    /// The publishers' QoS, once known (a topic subscribed before any
    /// publisher appeared).
    Offered { name: String, offered: Vec<Qos> },
    Message {
        topic: String,
        log_time_ns: u64,
        data: Vec<u8>,
    },
}

/// The writer thread: topics and messages in, the bag out.
fn writer_thread(
    mut w: BagWriter,
    rx: mpsc::Receiver<ToWriter>,
    queued: Arc<AtomicU64>,
) -> Result<(BagWriter, u64), String> {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut bytes = 0u64;
    for m in rx {
        match m {
            ToWriter::Topic {
                name,
                type_name,
                offered,
            } => match w.add_topic(&name, &type_name, &offered) {
                Ok(i) => {
                    index.insert(name, i);
                }
                // One topic whose definition is not installed does not
                // stop the others.
                Err(e) => tracing::error!("recorder: {name}: {e}; not recorded"),
            },
            ToWriter::Offered { name, offered } => {
                if let Some(&i) = index.get(&name) {
                    w.set_offered(i, &offered);
                }
            }
            ToWriter::Message {
                topic,
                log_time_ns,
                data,
            } => {
                queued.fetch_sub(data.len() as u64, Ordering::Relaxed);
                if let Some(&i) = index.get(&topic) {
                    w.write(i, log_time_ns, &data)?;
                    bytes += data.len() as u64;
                }
            }
        }
    }
    Ok((w, bytes))
}

/// The publishers' offered QoS on a topic.
fn offered(node: &SharedNode, topic: &str) -> Vec<Qos> {
    node.lock()
        .get_publishers_info_by_topic(topic, false)
        .map(|v| v.iter().map(|i| Qos::from_r2r(&i.qos_profile)).collect())
        .unwrap_or_default()
}

/// Records until the duration passes or `stop` resolves; `ready` is
/// called with each topic once it is subscribed.
pub async fn record(
    ctx: &r2r::Context,
    opts: RecordOptions,
    stop: impl std::future::Future<Output = ()>,
    ready: impl Fn(&str, &str),
) -> anyhow::Result<RecordSummary> {
    let writer =
        BagWriter::create(&opts.output, opts.writer.clone()).map_err(anyhow::Error::msg)?;
    let running = RunningNode::start(ctx, "cncpick_recorder", "")?;
    let node = running.node.clone();
    let (tx, rx) = mpsc::channel::<ToWriter>();
    let queued = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let thread = {
        let queued = queued.clone();
        std::thread::Builder::new()
            .name("bag-writer".into())
            .spawn(move || writer_thread(writer, rx, queued))?
    };
    let times: Arc<Mutex<Heard>> = Arc::default();
    let mut tasks = Vec::new();
    let mut subscribed: BTreeSet<String> = BTreeSet::new();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut unoffered: BTreeSet<String> = BTreeSet::new();
    let wanted: BTreeSet<String> = opts.topics.iter().cloned().collect();
    let started = tokio::time::Instant::now();
    let deadline = opts
        .duration_s
        .map(|d| started + Duration::from_secs_f64(d));
    let mut discover =
        tokio::time::interval(Duration::from_secs_f64(opts.discovery_period_s.max(0.01)));
    let until_deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop, until_deadline);
    let writer_failed = loop {
        tokio::select! {
            _ = &mut stop => break None,
            _ = &mut until_deadline => break None,
            _ = discover.tick() => {
                if thread.is_finished() {
                    break Some(());
                }
                let mut found: Vec<(String, String, bool)> =
                    opts.known.iter().map(|(n, t)| (n.clone(), t.clone(), true)).collect();
                let graph = node.lock().get_topic_names_and_types().unwrap_or_default();
                found.extend(
                    graph.into_iter().filter_map(|(n, types)| Some((n, types.first()?.clone(), false))),
                );
                // Topics subscribed before their publishers appeared: their
                // offered QoS, once there is some.
                for name in &unoffered.clone() {
                    let offered = offered(&node, name);
                    if !offered.is_empty() {
                        let _ = tx.send(ToWriter::Offered { name: name.clone(), offered });
                        unoffered.remove(name);
                    }
                }
                for (name, type_name, known) in found {
                    if subscribed.contains(&name) || failed.contains(&name) {
                        continue;
                    }
                    if opts.exclude.contains(&name)
                        || opts.exclude_types.contains(&type_name)
                        || !(known || wanted.contains(&name) || (opts.all_cell_topics && is_cell_topic(&name)))
                    {
                        continue;
                    }
                    let offered = offered(&node, &name);
                    let sub = node.lock().subscribe_raw(&name, &type_name, qos::adapted(&offered, RECORD_DEPTH));
                    let mut sub = match sub {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("recorder: {name} ({type_name}) cannot be recorded by this build: {e}");
                            failed.insert(name);
                            continue;
                        }
                    };
                    if offered.is_empty() {
                        unoffered.insert(name.clone());
                    }
                    let _ = tx.send(ToWriter::Topic { name: name.clone(), type_name: type_name.clone(), offered });
                    let (tx, queued, dropped, times, topic) =
                        (tx.clone(), queued.clone(), dropped.clone(), times.clone(), name.clone());
                    let max = opts.queue_max_bytes;
                    tasks.push(tokio::spawn(async move {
                        while let Some(data) = sub.next().await {
                            let t = crate::kit::time::wall_now_ns();
                            let n = data.len() as u64;
                            if queued.load(Ordering::Relaxed) + n > max {
                                dropped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            queued.fetch_add(n, Ordering::Relaxed);
                            {
                                let mut s = lock(&times);
                                s.first_ns.get_or_insert(t);
                                s.last_ns = t;
                                s.count += 1;
                            }
                            if tx.send(ToWriter::Message { topic: topic.clone(), log_time_ns: t, data }).is_err() {
                                return;
                            }
                        }
                    }));
                    ready(&name, &type_name);
                    subscribed.insert(name);
                }
            }
        }
    };
    // Messages DDS has already delivered are still taken: stop once none
    // has come for 200 ms (2 s at most).
    let drain_until = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut seen = lock(&times).count;
    while tokio::time::Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = lock(&times).count;
        if now == seen {
            break;
        }
        seen = now;
    }
    stop_tasks(tasks).await;
    drop(tx);
    running.stop();
    let joined = thread
        .join()
        .map_err(|_| anyhow::anyhow!("the bag writer thread panicked"))?;
    let (w, bytes) = joined.map_err(|e| anyhow::anyhow!("writing the bag: {e}"))?;
    if writer_failed.is_some() {
        anyhow::bail!("the bag writer stopped early");
    }
    let info = w.close().map_err(anyhow::Error::msg)?;
    let h = *lock(&times);
    Ok(RecordSummary {
        messages: h.count,
        bytes,
        dropped: dropped.load(Ordering::Relaxed),
        span_s: h
            .first_ns
            .map_or(0.0, |f| h.last_ns.saturating_sub(f) as f64 / 1e9),
        info,
    })
}

/// What a play did.
#[derive(Debug, Clone, Default)]
pub struct PlaySummary {
    pub published: u64,
    pub topics: Vec<String>,
    /// Topics this build cannot publish, with the reason.
    pub skipped: Vec<(String, String)>,
    pub loops: u64,
}

/// Player settings beyond what is played.
#[derive(Debug, Clone)]
pub struct PlayerOptions {
    pub play: PlayOptions,
    /// Publish /clock (rosgraph_msgs/Clock) at this rate while playing.
    pub clock_hz: Option<f64>,
    pub node_name: String,
}

/// Plays a bag (already read) until its end (or forever with loop), or a
/// shutdown signal. Services on the node (std_srvs/Trigger): `pause`,
/// `resume`, `toggle_paused`, `play_next` (one message, while paused) and
/// `is_paused` (success = paused).
pub async fn play(
    ctx: &r2r::Context,
    bag: &Bag,
    opts: PlayerOptions,
) -> anyhow::Result<PlaySummary> {
    opts.play.check().map_err(anyhow::Error::msg)?;
    let running = RunningNode::start(ctx, &opts.node_name, "")?;
    let node = running.node.clone();
    let mut summary = PlaySummary::default();
    let mut pubs: BTreeMap<usize, r2r::PublisherUntyped> = BTreeMap::new();
    for (i, t) in bag.topics.iter().enumerate() {
        if !opts.play.plays(&t.name) {
            continue;
        }
        let name = opts.play.published_name(&t.name).to_string();
        match node.lock().create_publisher_untyped(
            &name,
            &t.type_name,
            qos::adapted(&t.offered_qos, 10),
        ) {
            Ok(p) => {
                pubs.insert(i, p);
                summary.topics.push(name);
            }
            Err(e) => {
                tracing::warn!(
                    "player: {} ({}) cannot be published by this build: {e}; skipped",
                    t.name,
                    t.type_name
                );
                summary
                    .skipped
                    .push((t.name.clone(), format!("{}: {e}", t.type_name)));
            }
        }
    }
    if pubs.is_empty() {
        running.stop();
        anyhow::bail!(
            "{}: nothing to play (topics in the bag: {:?}; skipped: {:?})",
            bag.path.display(),
            bag.topics.iter().map(|t| &t.name).collect::<Vec<_>>(),
            summary.skipped
        );
    }
    let times: Vec<u64> = bag.messages.iter().map(|m| m.log_time_ns).collect();
    let names: Vec<&str> = bag
        .messages
        .iter()
        .map(|m| {
            if pubs.contains_key(&m.topic) {
                bag.topics[m.topic].name.as_str()
            } else {
                ""
            }
        })
        .collect();
    let mut play_opts = opts.play.clone();
    if play_opts.topics.is_empty() {
        play_opts.topics = pubs.keys().map(|&i| bag.topics[i].name.clone()).collect();
    }
    let list = playlist(&times, &names, &play_opts);
    let origin = tokio::time::Instant::now();
    let now_s = move || origin.elapsed().as_secs_f64();
    let first_ns = list.first().map(|&i| times[i]).unwrap_or(0);
    let last_ns = list.iter().map(|&i| times[i]).max().unwrap_or(first_ns);
    let timeline = Arc::new(Mutex::new(
        Timeline::new(opts.play.rate, now_s(), first_ns, opts.play.start_paused).ending_at(last_ns),
    ));
    // Services.
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<(
        Command,
        tokio::sync::oneshot::Sender<Trigger::Response>,
    )>();
    let mut tasks = Vec::new();
    for (name, make) in [
        ("pause", (|| Command::Pause) as fn() -> Command),
        ("resume", || Command::Resume),
        ("toggle_paused", || Command::Toggle),
        ("play_next", || Command::Next),
        ("is_paused", || Command::IsPaused),
    ] {
        let service = format!("{}/{name}", opts.node_name);
        let mut srv = node
            .lock()
            .create_service::<Trigger::Service>(&service, r2r::QosProfile::services_default())?;
        let cmd_tx = cmd_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(req) = srv.next().await {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if cmd_tx.send((make(), tx)).is_err() {
                    return;
                }
                let resp = tokio::time::timeout(Duration::from_secs(2), rx).await;
                let resp = match resp {
                    Ok(Ok(r)) => r,
                    _ => Trigger::Response {
                        success: false,
                        message: "the player did not answer in 2 s".into(),
                    },
                };
                crate::kit::call::reply(req, &service, resp);
            }
        }));
    }
    if let Some(hz) = opts.clock_hz.filter(|h| h.is_finite() && *h > 0.0) {
        let clock = node
            .lock()
            .create_publisher::<r2r::rosgraph_msgs::msg::Clock>(
                "/clock",
                r2r::QosProfile::default().keep_last(1),
            )?;
        let timeline = timeline.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / hz));
            loop {
                tick.tick().await;
                let ns = lock(&timeline).bag_now(now_s());
                let _ = clock.publish(&r2r::rosgraph_msgs::msg::Clock {
                    clock: r2r::builtin_interfaces::msg::Time {
                        sec: (ns / 1_000_000_000) as i32,
                        nanosec: (ns % 1_000_000_000) as u32,
                    },
                });
            }
        }));
    }
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut k = 0usize;
    'play: while !list.is_empty() {
        if k == list.len() {
            if !opts.play.loop_play {
                break;
            }
            k = 0;
            summary.loops += 1;
            lock(&timeline).restart(now_s(), first_ns);
        }
        let m = &bag.messages[list[k]];
        // Wait until it is due, answering commands meanwhile.
        loop {
            let due = lock(&timeline).due_s(m.log_time_ns);
            let sleep = async {
                match due {
                    Some(d) => {
                        tokio::time::sleep_until(origin + Duration::from_secs_f64(d.max(0.0))).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => break 'play,
                _ = sleep => break,
                c = cmd_rx.recv() => {
                    let Some((c, reply)) = c else { break 'play };
                    let answer = lock(&timeline).command(now_s(), c);
                    match answer {
                        Answer::Reply { success, message } => {
                            let _ = reply.send(Trigger::Response { success, message });
                        }
                        Answer::PlayNext => {
                            lock(&timeline).stepped(m.log_time_ns);
                            let ok = pubs[&m.topic].publish_raw(&m.data).is_ok();
                            summary.published += u64::from(ok);
                            let message = format!("played one message on {}", bag.topics[m.topic].name);
                            let _ = reply.send(Trigger::Response { success: ok, message });
                            k += 1;
                            continue 'play;
                        }
                    }
                }
            }
        }
        match pubs[&m.topic].publish_raw(&m.data) {
            Ok(()) => summary.published += 1,
            Err(e) => tracing::warn!("player: publishing on {}: {e}", bag.topics[m.topic].name),
        }
        k += 1;
    }
    stop_tasks(tasks).await;
    running.stop();
    Ok(summary)
}

/// Reads a bag for playing or checking; prints the damage, if any.
pub fn read_reporting(path: &std::path::Path) -> anyhow::Result<Bag> {
    let bag = reader::open(path).map_err(anyhow::Error::msg)?;
    for d in &bag.damage {
        eprintln!("bag: {d}");
    }
    Ok(bag)
}

/// The recorder's chunk compression from its name.
pub fn compression(s: &str) -> anyhow::Result<Compression> {
    Compression::parse(s).map_err(anyhow::Error::msg)
}
