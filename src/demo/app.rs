//! Entry points of the demo executables, shared by the `cncpick` CLI and the
//! thin per-node binaries.

use super::core::DemoReport;
use super::node::{run_source, Registry, SourceConfig};
use crate::kit::app::{shutdown_signal, RunningNode};
use indicatif::{ProgressBar, ProgressStyle};

pub const NAMESPACE: &str = "/cell";

/// Both nodes in one process: the source publishes, the registry answers.
pub async fn run_graph(ctx: r2r::Context, cfg: SourceConfig) -> anyhow::Result<DemoReport> {
    let registry_node = RunningNode::start(&ctx, "demo_registry", NAMESPACE)?;
    let registry = Registry::start(&registry_node.node, "/cell/demo_registry")?;
    let source_node = RunningNode::start(&ctx, "demo_source", NAMESPACE)?;
    let report = run_source_with_progress(&source_node, &cfg).await;
    registry.stop().await;
    registry_node.stop();
    source_node.stop();
    report
}

pub async fn run_source_with_progress(
    node: &RunningNode,
    cfg: &SourceConfig,
) -> anyhow::Result<DemoReport> {
    let bar = ProgressBar::new(cfg.frames);
    bar.set_style(
        ProgressStyle::with_template("{spinner} frames {pos}/{len} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = run_source(&node.node, cfg, |sent, back| {
        bar.set_position(sent);
        bar.set_message(format!("object events back: {back}"));
    })
    .await;
    bar.finish_and_clear();
    report
}

/// The registry alone, until Ctrl-C or SIGTERM.
pub async fn run_registry(ctx: r2r::Context, name: &str) -> anyhow::Result<()> {
    let node = RunningNode::start(&ctx, name, NAMESPACE)?;
    let registry = Registry::start(&node.node, &format!("{NAMESPACE}/{name}"))?;
    tracing::info!("{NAMESPACE}/{name} answering detections; stop with Ctrl-C");
    shutdown_signal().await;
    registry.stop().await;
    node.stop();
    Ok(())
}

/// The source alone: publish, report, and fail if anything was lost.
pub async fn run_source_only(ctx: r2r::Context, cfg: SourceConfig) -> anyhow::Result<DemoReport> {
    let node = RunningNode::start(&ctx, "demo_source", NAMESPACE)?;
    let report = run_source_with_progress(&node, &cfg).await;
    node.stop();
    report
}

/// Command-line options of the demo source.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Detection frames to publish.
    #[arg(long, default_value_t = 100)]
    pub frames: u64,
    /// Frame rate.
    #[arg(long, default_value_t = 20.0)]
    pub rate_hz: f64,
    /// New objects in each frame.
    #[arg(long, default_value_t = 2)]
    pub objects_per_frame: u32,
    /// How long to wait for the registry to appear.
    #[arg(long, default_value_t = 10.0)]
    pub match_timeout_s: f64,
}

impl SourceArgs {
    pub fn config(&self) -> anyhow::Result<SourceConfig> {
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(std::time::Duration::from_secs_f64(v))
            } else {
                anyhow::bail!("--{name} must be a positive number of seconds, got {v}")
            }
        };
        anyhow::ensure!(
            self.rate_hz.is_finite() && self.rate_hz > 0.0,
            "--rate-hz must be a positive number, got {}",
            self.rate_hz
        );
        Ok(SourceConfig {
            frames: self.frames,
            rate_hz: self.rate_hz,
            objects_per_frame: self.objects_per_frame,
            match_timeout: secs("match-timeout-s", self.match_timeout_s)?,
            ..SourceConfig::default()
        })
    }
}

/// Prints the report and turns a failed run into an error.
pub fn finish(title: &str, report: &DemoReport) -> anyhow::Result<()> {
    println!("{title}");
    println!("{report}");
    anyhow::ensure!(report.ok(), "the demo graph lost or duplicated messages");
    Ok(())
}
