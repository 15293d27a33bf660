//! The r2r shell of the example node.

use super::core::FailPlan;
use super::params::ExampleParams;
use crate::kit::breaker::BreakerConfig;
use crate::kit::call::Caller;
use crate::kit::lifecycle::core::Callback;
use crate::kit::lifecycle::{ActiveGate, CallbackResult, Callbacks, LifecyclePublisher};
use crate::kit::node;
use crate::kit::params::Params;
use crate::kit::retry::{DeadLetters, RetryPolicy};
use crate::kit::spin::SharedNode;
use crate::kit::trace::object_span;
use crate::msgs::srv::GetObject;
use futures::future::BoxFuture;
use r2r::std_msgs::msg::String as StringMsg;
use r2r::QosProfile;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::Instrument;

pub const TICK_TOPIC: &str = "ticks";

struct Example {
    node: SharedNode,
    gate: ActiveGate,
    params: Params<ExampleParams>,
    ticker: Option<JoinHandle<()>>,
}

impl Example {
    fn stop_ticker(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }

    /// The failure plan as the parameters say now.
    fn fail(&self) -> FailPlan {
        let p = self.params.get();
        // Both values are validated against their choices, so this parses.
        FailPlan::parse(&p.fail_on, &p.fail_mode).unwrap_or_default()
    }
}

impl Callbacks for Example {
    fn on_configure(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            let result = self.fail().result_for(Callback::Configure);
            if result != CallbackResult::Success {
                return result;
            }
            let publisher = {
                let mut n = self.node.lock();
                match n.create_publisher::<StringMsg>(TICK_TOPIC, QosProfile::default()) {
                    Ok(p) => LifecyclePublisher::new(p, self.gate.clone()),
                    Err(e) => return CallbackResult::Error(format!("creating {TICK_TOPIC}: {e}")),
                }
            };
            let p = self.params.get();
            let period = Duration::from_secs_f64(p.tick_period_s);
            let peer = if p.peer_service.is_empty() {
                None
            } else {
                let mut n = self.node.lock();
                match Caller::<GetObject::Service>::new(
                    &mut n,
                    &p.peer_service,
                    Duration::from_secs_f64(p.peer_timeout_s),
                    RetryPolicy::default(),
                    BreakerConfig {
                        failure_threshold: p.peer_breaker_failures as u32,
                        open_for: Duration::from_secs_f64(p.peer_breaker_open_s),
                    },
                    DeadLetters::in_memory(),
                    0,
                ) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        return CallbackResult::Error(format!("client for {}: {e}", p.peer_service))
                    }
                }
            };
            let gate = self.gate.clone();
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
                    if let (Some(peer), true) = (&peer, gate.is_open()) {
                        // One object per tick, its UUID the trace id of the call.
                        let id = uuid::Uuid::new_v4();
                        let span = object_span(&id);
                        let r = peer
                            .call(|_| {
                                let mut req = GetObject::Request::default();
                                req.object_id.uuid = id.as_bytes().to_vec();
                                req
                            })
                            .instrument(span.clone())
                            .await;
                        let _e = span.enter();
                        match r {
                            Ok(resp) => tracing::info!(found = resp.found, "peer answered"),
                            Err(e) => tracing::warn!("peer call failed: {e}"),
                        }
                    }
                }
            }));
            CallbackResult::Success
        })
    }
    fn on_activate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move { self.fail().result_for(Callback::Activate) })
    }
    fn on_deactivate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move { self.fail().result_for(Callback::Deactivate) })
    }
    fn on_cleanup(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            let r = self.fail().result_for(Callback::Cleanup);
            if r == CallbackResult::Success {
                self.stop_ticker();
            }
            r
        })
    }
    fn on_shutdown(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            self.stop_ticker();
            self.fail().result_for(Callback::Shutdown)
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

/// The example node's `main`.
pub fn main() {
    node::main::<ExampleParams, _, _>("kit_example", "/cell", |c| {
        Ok(Example {
            node: c.node.clone(),
            gate: c.gate.clone(),
            params: c.params.clone(),
            ticker: None,
        })
    })
}
