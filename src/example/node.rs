//! The r2r shell of the example node.

use super::core::FailPlan;
use crate::kit::app::{shutdown_signal, RunningNode};
use crate::kit::health::Health;
use crate::kit::lifecycle::core::Callback;
use crate::kit::lifecycle::{
    ActiveGate, CallbackResult, Callbacks, LifecycleHandle, LifecyclePublisher,
};
use crate::kit::spin::SharedNode;
use futures::future::BoxFuture;
use r2r::std_msgs::msg::String as StringMsg;
use r2r::QosProfile;
use std::time::Duration;
use tokio::task::JoinHandle;

pub const TICK_TOPIC: &str = "ticks";

struct Example {
    node: SharedNode,
    gate: ActiveGate,
    fail: FailPlan,
    tick_period: Duration,
    ticker: Option<JoinHandle<()>>,
}

impl Example {
    fn stop_ticker(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}

impl Callbacks for Example {
    fn on_configure(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            let result = self.fail.result_for(Callback::Configure);
            if result != CallbackResult::Success {
                return result;
            }
            let publisher = {
                let mut n = self.node.lock().unwrap_or_else(|e| e.into_inner());
                match n.create_publisher::<StringMsg>(TICK_TOPIC, QosProfile::default()) {
                    Ok(p) => LifecyclePublisher::new(p, self.gate.clone()),
                    Err(e) => return CallbackResult::Error(format!("creating {TICK_TOPIC}: {e}")),
                }
            };
            let period = self.tick_period;
            // Ticks run from configure to cleanup; the lifecycle publisher
            // lets them out only while the node is active.
            self.ticker = Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                let mut n = 0u64;
                loop {
                    tick.tick().await;
                    n += 1;
                    let _ = publisher.publish(&StringMsg {
                        data: format!("tick {n}"),
                    });
                }
            }));
            CallbackResult::Success
        })
    }
    fn on_activate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move { self.fail.result_for(Callback::Activate) })
    }
    fn on_deactivate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move { self.fail.result_for(Callback::Deactivate) })
    }
    fn on_cleanup(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            let r = self.fail.result_for(Callback::Cleanup);
            if r == CallbackResult::Success {
                self.stop_ticker();
            }
            r
        })
    }
    fn on_shutdown(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            self.stop_ticker();
            self.fail.result_for(Callback::Shutdown)
        })
    }
    fn on_error(&mut self) -> BoxFuture<'_, CallbackResult> {
        // Recover to Unconfigured: drop what configure set up.
        Box::pin(async move {
            self.stop_ticker();
            CallbackResult::Success
        })
    }
}

/// Command-line options of the example node.
#[derive(Debug, Clone, clap::Args)]
pub struct ExampleArgs {
    #[arg(long, default_value = "kit_example")]
    pub name: String,
    #[arg(long, default_value = "/cell")]
    pub namespace: String,
    #[arg(long, default_value_t = 1.0)]
    pub heartbeat_period_s: f64,
    #[arg(long, default_value_t = 0.05)]
    pub tick_period_s: f64,
    /// Make this transition's callback fail (tests of the failure paths).
    #[arg(long, default_value = "")]
    pub fail_on: String,
    /// failure (stay in the previous state) or error (go through ErrorProcessing).
    #[arg(long, default_value = "error")]
    pub fail_mode: String,
}

fn positive_s(name: &str, v: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0,
        "--{name} must be a positive number of seconds, got {v}"
    );
    Ok(Duration::from_secs_f64(v))
}

/// Runs the example node until Ctrl-C or SIGTERM.
pub async fn run(ctx: r2r::Context, args: ExampleArgs) -> anyhow::Result<()> {
    let fail = FailPlan::parse(&args.fail_on, &args.fail_mode).map_err(anyhow::Error::msg)?;
    let heartbeat = positive_s("heartbeat-period-s", args.heartbeat_period_s)?;
    let tick_period = positive_s("tick-period-s", args.tick_period_s)?;
    let node = RunningNode::start(&ctx, &args.name, &args.namespace)?;
    let fqn = format!("{}/{}", args.namespace.trim_end_matches('/'), args.name);
    let gate = ActiveGate::default();
    let example = Example {
        node: node.node.clone(),
        gate: gate.clone(),
        fail,
        tick_period,
        ticker: None,
    };
    let lifecycle = LifecycleHandle::serve_with_gate(&node.node, &fqn, example, gate)?;
    let health = Health::start(&node.node, &fqn, heartbeat, lifecycle.state_reader())?;
    tracing::info!(node = %fqn, "lifecycle node up, unconfigured");
    shutdown_signal().await;
    health.stop().await;
    lifecycle.stop().await;
    node.stop();
    Ok(())
}
