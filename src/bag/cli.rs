//! The recorder's and player's command lines, shared by `cncpick record`
//! / `cncpick play` and the `recorder` / `player` executables (`ros2 run
//! cncpick recorder -o DIR --all`).

use crate::kit::app::{run, shutdown_signal};

#[derive(clap::Args)]
pub struct RecordArgs {
    /// The bag folder to create (must not exist).
    #[arg(short = 'o', long)]
    pub output: std::path::PathBuf,
    /// Topics to record, by name.
    pub topics: Vec<String>,
    /// Every cncpick topic (under /cell and /sim), as they appear.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Topics not to record.
    #[arg(long, num_args = 1..)]
    pub exclude: Vec<String>,
    /// Start a new file after this many bytes (0: never).
    #[arg(short = 'b', long, default_value_t = 0)]
    pub max_bag_size: u64,
    /// Start a new file after this many seconds (0: never).
    #[arg(short = 'd', long, default_value_t = 0.0)]
    pub max_bag_duration_s: f64,
    /// MCAP chunk compression: none, zstd or lz4.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// At most this many bytes wait for the writer; more are dropped and counted.
    #[arg(long, default_value_t = 1 << 30)]
    pub queue_max_bytes: u64,
}

#[derive(clap::Args)]
pub struct PlayArgs {
    /// The bag: a folder with metadata.yaml, or one .mcap file.
    pub bag: std::path::PathBuf,
    /// Bag seconds per second.
    #[arg(short = 'r', long, default_value_t = 1.0)]
    pub rate: f64,
    /// Play again from the start at the end, until stopped.
    #[arg(short = 'l', long = "loop")]
    pub loop_play: bool,
    /// Start this many seconds into the bag.
    #[arg(long, default_value_t = 0.0)]
    pub start_offset_s: f64,
    /// Only these topics.
    #[arg(long, num_args = 1..)]
    pub topics: Vec<String>,
    /// Publish a topic under another name: from:=to.
    #[arg(long, num_args = 1..)]
    pub remap: Vec<String>,
    /// Publish /clock at this rate, Hz (the bag's time).
    #[arg(long)]
    pub clock: Option<f64>,
    /// Start paused (resume or play_next through the services).
    #[arg(long)]
    pub start_paused: bool,
    /// The player node's name (its services are <name>/pause, ...).
    #[arg(long, default_value = "cncpick_player")]
    pub node_name: String,
}

pub fn record(a: RecordArgs) -> anyhow::Result<()> {
    use crate::bag::node::{compression, record, RecordOptions};
    if a.topics.is_empty() && !a.all {
        anyhow::bail!("name the topics to record, or give --all");
    }
    if !(a.max_bag_duration_s.is_finite() && a.max_bag_duration_s >= 0.0) {
        anyhow::bail!(
            "--max-bag-duration-s must be zero or more, got {}",
            a.max_bag_duration_s
        );
    }
    if let Some(d) = a.duration_s.filter(|d| !(d.is_finite() && *d > 0.0)) {
        anyhow::bail!("--duration-s must be a positive number, got {d}");
    }
    let opts = RecordOptions {
        output: a.output,
        topics: a.topics,
        all_cell_topics: a.all,
        exclude: a.exclude,
        writer: crate::bag::writer::WriterOptions {
            max_file_bytes: a.max_bag_size,
            max_file_duration_ns: (a.max_bag_duration_s * 1e9) as u64,
            compression: compression(&a.compression)?,
            custom_data: Vec::new(),
        },
        duration_s: a.duration_s,
        queue_max_bytes: a.queue_max_bytes,
        ..RecordOptions::default()
    };
    run(|ctx| async move {
        let s = record(&ctx, opts, shutdown_signal(), |topic, ty| {
            println!("recorder: recording {topic} ({ty})");
            use std::io::Write;
            let _ = std::io::stdout().flush();
        })
        .await?;
        println!(
            "recorder: {} messages, {:.1} MB in {:.2} s ({:.1} MB/s, {:.0} msg/s), {} dropped, {} files, in {}",
            s.messages,
            s.bytes as f64 / 1e6,
            s.span_s,
            if s.span_s > 0.0 { s.bytes as f64 / 1e6 / s.span_s } else { 0.0 },
            if s.span_s > 0.0 { s.messages as f64 / s.span_s } else { 0.0 },
            s.dropped,
            s.info.files.len(),
            s.info.files.first().map(|_| "the bag").unwrap_or("no file"),
        );
        Ok(())
    })
}

pub fn play(a: PlayArgs) -> anyhow::Result<()> {
    use crate::bag::node::{play, read_reporting, PlayerOptions};
    use crate::bag::play::{parse_remap, PlayOptions};
    let remap = a
        .remap
        .iter()
        .map(|r| parse_remap(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let opts = PlayerOptions {
        play: PlayOptions {
            rate: a.rate,
            start_offset_s: a.start_offset_s,
            loop_play: a.loop_play,
            topics: a.topics,
            remap,
            start_paused: a.start_paused,
        },
        clock_hz: a.clock,
        node_name: a.node_name,
    };
    opts.play.check().map_err(anyhow::Error::msg)?;
    if let Some(hz) = opts.clock_hz.filter(|hz| !(hz.is_finite() && *hz > 0.0)) {
        anyhow::bail!("--clock must be a positive rate in Hz, got {hz}");
    }
    let bag = read_reporting(&a.bag)?;
    run(|ctx| async move {
        println!(
            "player: {} messages on {} topics from {}",
            bag.messages.len(),
            bag.topics.len(),
            a.bag.display()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let s = play(&ctx, &bag, opts).await?;
        println!(
            "player: published {} messages on {:?}{}",
            s.published,
            s.topics,
            if s.skipped.is_empty() {
                String::new()
            } else {
                format!("; skipped {:?}", s.skipped)
            }
        );
        Ok(())
    })
}
