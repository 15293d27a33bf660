//! Retry with exponential backoff and jitter, idempotent request ids, and a
//! dead-letter log for what finally failed. Time is tokio's, so tests run it
//! under a paused clock; jitter comes from an injected, seedable RNG.

use crate::kit::call::CallError;
use rand::Rng;
use serde::Serialize;
use std::collections::VecDeque;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The delay before retry `n` (1-based) is `initial * multiplier^(n-1)`,
/// capped at `max`, then spread by ±`jitter` (a fraction) so that many
/// callers retrying together do not stay in step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub multiplier: f64,
    pub max: Duration,
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(5),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// `unit` is a uniform draw from [0, 1); 0.5 means no jitter.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let base =
            self.initial.as_secs_f64() * self.multiplier.powi(retry.saturating_sub(1) as i32);
        let base = base.min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base * spread).max(0.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            backoff: Backoff::default(),
        }
    }
}

/// One entry of the dead-letter log.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    pub what: String,
    pub request_id: String,
    pub attempts: u32,
    pub error: String,
    /// Wall-clock time of the last failure, ns since the epoch.
    pub at_ns: u64,
}

/// Where finally failed requests go: JSON lines in a file, and the newest
/// [`DEAD_LETTERS_KEPT`] kept in memory for inspection (a node that runs
/// for months must not grow with every failure).
#[derive(Clone, Default)]
pub struct DeadLetters {
    file: Option<PathBuf>,
    kept: Arc<Mutex<VecDeque<DeadLetter>>>,
}

/// How many dead letters are kept in memory, newest last.
pub const DEAD_LETTERS_KEPT: usize = 1000;

impl DeadLetters {
    pub fn in_memory() -> Self {
        Self::default()
    }

    pub fn to_file(path: &Path) -> Self {
        DeadLetters {
            file: Some(path.to_path_buf()),
            kept: Arc::default(),
        }
    }

    pub fn record(&self, letter: DeadLetter) {
        tracing::error!(
            what = %letter.what,
            request_id = %letter.request_id,
            attempts = letter.attempts,
            "gave up: {}",
            letter.error
        );
        if let Some(path) = &self.file {
            let line = serde_json::to_string(&letter).unwrap_or_default();
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                tracing::error!("dead-letter log {}: {e}", path.display());
            }
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == DEAD_LETTERS_KEPT {
            kept.pop_front();
        }
        kept.push_back(letter);
    }

    /// The dead letters kept in memory, oldest first.
    pub fn entries(&self) -> Vec<DeadLetter> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().cloned().collect()
    }
}

/// A request id that stays the same across the retries of one request, so
/// the server can answer a repeat with its first answer.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether a failure is worth another attempt.
pub fn retryable(e: &CallError) -> bool {
    matches!(
        e,
        CallError::Unavailable { .. } | CallError::Timeout { .. } | CallError::Ros { .. }
    )
}

/// Runs `attempt(n, request_id)` up to `policy.max_attempts` times, sleeping
/// the backoff between failures. Each attempt must bound itself (the kit's
/// `bounded` does). What fails every time goes to `dead_letters`.
pub async fn with_retry<T, F, Fut>(
    what: &str,
    request_id: &str,
    policy: &RetryPolicy,
    rng: &mut impl Rng,
    dead_letters: &DeadLetters,
    mut attempt: F,
) -> Result<T, CallError>
where
    F: FnMut(u32, &str) -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut n = 1;
    loop {
        match attempt(n, request_id).await {
            Ok(v) => return Ok(v),
            Err(e) if n < policy.max_attempts && retryable(&e) => {
                let delay = policy.backoff.delay(n, rng.random::<f64>());
                tracing::warn!(what, request_id, attempt = n, ?delay, "retrying after: {e}");
                tokio::time::sleep(delay).await;
                n += 1;
            }
            Err(e) => {
                dead_letters.record(DeadLetter {
                    what: what.to_string(),
                    request_id: request_id.to_string(),
                    attempts: n,
                    error: e.to_string(),
                    at_ns: crate::kit::time::wall_now_ns(),
                });
                return Err(CallError::GaveUp {
                    what: what.to_string(),
                    attempts: n,
                    last: e.to_string(),
                });
            }
        }
    }
}
