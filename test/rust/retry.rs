//! Retry with backoff, dead letters and the circuit breaker, under tokio's
//! paused clock: exact attempt times, no real sleeps.

use cncpick::kit::breaker::{Breaker, BreakerConfig, BreakerState};
use cncpick::kit::call::{bounded, CallError};
use cncpick::kit::retry::{with_retry, Backoff, DeadLetters, RetryPolicy};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::future::pending;
use std::time::Duration;
use tokio::time::Instant;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn no_jitter(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff: Backoff {
            initial: ms(100),
            multiplier: 2.0,
            max: ms(5000),
            jitter: 0.0,
        },
    }
}

fn unavailable() -> CallError {
    CallError::Unavailable {
        service: "/s".into(),
        timeout_ms: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_retried_at_exact_backoff_times_then_dead_lettered() {
    let t0 = Instant::now();
    let dead = DeadLetters::in_memory();
    let mut rng = SmallRng::seed_from_u64(1);
    let mut at = Vec::new();
    let mut ids = Vec::new();
    let r: Result<(), _> = with_retry("/s", "req-7", &no_jitter(4), &mut rng, &dead, |_, id| {
        at.push(t0.elapsed());
        ids.push(id.to_string());
        async { Err(unavailable()) }
    })
    .await;
    assert_eq!(at, vec![ms(0), ms(100), ms(300), ms(700)]);
    assert!(
        ids.iter().all(|i| i == "req-7"),
        "one request id across retries: {ids:?}"
    );
    assert!(
        matches!(r, Err(CallError::GaveUp { attempts: 4, .. })),
        "{r:?}"
    );
    let letters = dead.entries();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].request_id.as_str(), letters[0].attempts),
        ("req-7", 4)
    );
    assert!(letters[0].error.contains("/s"), "{:?}", letters[0]);
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_bounded_and_the_backoff_follows_the_timeout() {
    let t0 = Instant::now();
    let mut at = Vec::new();
    let r: Result<u8, _> = with_retry(
        "/s",
        "req-1",
        &no_jitter(3),
        &mut SmallRng::seed_from_u64(1),
        &DeadLetters::in_memory(),
        |_, _| {
            at.push(t0.elapsed());
            // A server that is there but never answers.
            bounded("/s", Duration::from_secs(2), async { Ok(()) }, || {
                Ok(pending())
            })
        },
    )
    .await;
    assert!(r.is_err());
    assert_eq!(at, vec![ms(0), ms(2100), ms(4300)]);
    assert_eq!(t0.elapsed(), ms(6300));
}

#[tokio::test(start_paused = true)]
async fn a_success_after_failures_stops_retrying_and_writes_no_dead_letter() {
    let dead = DeadLetters::in_memory();
    let mut calls = 0;
    let r = with_retry(
        "/s",
        "r",
        &no_jitter(5),
        &mut SmallRng::seed_from_u64(1),
        &dead,
        |n, _| {
            calls += 1;
            async move {
                if n < 3 {
                    Err(unavailable())
                } else {
                    Ok(n)
                }
            }
        },
    )
    .await;
    assert_eq!(r.unwrap(), 3);
    assert_eq!(calls, 3);
    assert!(dead.entries().is_empty());
}

#[test]
fn jitter_spreads_delays_within_its_fraction_and_the_cap_holds() {
    let b = Backoff {
        initial: ms(100),
        multiplier: 2.0,
        max: ms(1000),
        jitter: 0.2,
    };
    assert_eq!(b.delay(1, 0.5), ms(100));
    assert_eq!(b.delay(1, 0.0), ms(80));
    assert_eq!(b.delay(3, 0.5), ms(400));
    assert_eq!(b.delay(10, 0.5), ms(1000), "capped");
    let mut rng = SmallRng::seed_from_u64(42);
    let draws: Vec<Duration> = (0..1000)
        .map(|_| b.delay(2, rand::Rng::random::<f64>(&mut rng)))
        .collect();
    assert!(draws.iter().all(|d| *d >= ms(160) && *d <= ms(240)));
    let distinct: std::collections::HashSet<_> = draws.iter().collect();
    assert!(distinct.len() > 100, "jitter spreads the delays");
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_n_failures_probes_once_when_half_open_and_closes_on_success() {
    let mut b = Breaker::new(BreakerConfig {
        failure_threshold: 5,
        open_for: Duration::from_secs(60),
    });
    let t0 = Instant::now();
    for k in 0..5 {
        assert!(b.allow(Instant::now()).is_ok(), "closed before failure {k}");
        b.record_failure(Instant::now());
    }
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(59)).await;
    let rej = b.allow(Instant::now()).unwrap_err();
    assert_eq!(rej.retry_in, Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(b.allow(Instant::now()).is_ok(), "the half-open probe");
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.allow(Instant::now()).is_err(), "only one probe at a time");
    b.record_success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.allow(Instant::now()).is_ok());
    assert_eq!(t0.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_breaker_for_another_full_period() {
    let mut b = Breaker::new(BreakerConfig {
        failure_threshold: 2,
        open_for: Duration::from_secs(60),
    });
    b.record_failure(Instant::now());
    b.record_failure(Instant::now());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(b.allow(Instant::now()).is_ok());
    b.record_failure(Instant::now());
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        b.allow(Instant::now()).unwrap_err().retry_in,
        Duration::from_secs(30)
    );
}

#[test]
fn failures_that_are_not_in_a_row_do_not_open_the_breaker() {
    let mut b = Breaker::new(BreakerConfig::default());
    let now = Instant::now();
    for _ in 0..4 {
        b.record_failure(now);
    }
    b.record_success();
    for _ in 0..4 {
        b.record_failure(now);
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn dead_letters_are_appended_to_their_file_as_json_lines() {
    let path = dead_letter_file();
    let dead = DeadLetters::to_file(&path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    for id in ["a", "b"] {
        let _ = rt.block_on(with_retry::<(), _, _>(
            "/s",
            id,
            &no_jitter(1),
            &mut SmallRng::seed_from_u64(1),
            &dead,
            |_, _| async { Err(unavailable()) },
        ));
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, vec!["a", "b"]);
}

#[test]
fn dead_letters_keep_only_the_newest_in_memory_and_every_one_in_the_file() {
    use cncpick::kit::retry::{DeadLetter, DEAD_LETTERS_KEPT};
    let path = dead_letter_file();
    let dead = DeadLetters::to_file(&path);
    let total = DEAD_LETTERS_KEPT + 25;
    for k in 0..total {
        dead.record(DeadLetter {
            what: "svc".into(),
            request_id: format!("r{k}"),
            attempts: 3,
            error: "no reply".into(),
            at_ns: k as u64,
        });
    }
    let kept = dead.entries();
    assert_eq!(kept.len(), DEAD_LETTERS_KEPT);
    assert_eq!(kept[0].request_id, "r25");
    assert_eq!(kept.last().unwrap().request_id, format!("r{}", total - 1));
    let lines = std::fs::read_to_string(&path).unwrap();
    assert_eq!(lines.lines().count(), total);
}

/// A fresh, empty dead-letter file, removed when dropped.
fn dead_letter_file() -> tempfile::TempPath {
    tempfile::Builder::new()
        .prefix("cncpick-dead-")
        .suffix(".jsonl")
        .tempfile()
        .unwrap()
        .into_temp_path()
}
