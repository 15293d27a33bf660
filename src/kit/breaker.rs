//! A circuit breaker around any call: after `failure_threshold` failures in
//! a row it opens and refuses calls for `open_for`; then one probe is let
//! through (half-open); its success closes the breaker, its failure opens it
//! again. Pure: the caller passes the time.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    /// Seed defaults: 5 failures, 60 s open.
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open: {retry_in:?} until a probe is allowed")]
pub struct Rejected {
    pub retry_in: Duration,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            state: BreakerState::Closed,
            failures: 0,
            opened_at: None,
            probe_in_flight: false,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Asks to make a call at `now`.
    pub fn allow(&mut self, now: Instant) -> Result<(), Rejected> {
        match self.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let since = now.saturating_duration_since(self.opened_at.unwrap_or(now));
                if since >= self.config.open_for {
                    self.state = BreakerState::HalfOpen;
                    self.probe_in_flight = true;
                    Ok(())
                } else {
                    Err(Rejected {
                        retry_in: self.config.open_for - since,
                    })
                }
            }
            BreakerState::HalfOpen if !self.probe_in_flight => {
                self.probe_in_flight = true;
                Ok(())
            }
            // One probe at a time.
            BreakerState::HalfOpen => Err(Rejected {
                retry_in: Duration::ZERO,
            }),
        }
    }

    pub fn record_success(&mut self) {
        self.state = BreakerState::Closed;
        self.failures = 0;
        self.opened_at = None;
        self.probe_in_flight = false;
    }

    pub fn record_failure(&mut self, now: Instant) {
        self.probe_in_flight = false;
        match self.state {
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Closed => {
                self.failures += 1;
                if self.failures >= self.config.failure_threshold {
                    self.open(now);
                }
            }
            BreakerState::Open => {}
        }
    }

    fn open(&mut self, now: Instant) {
        tracing::warn!(failures = self.failures, "circuit breaker opened");
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
    }
}
