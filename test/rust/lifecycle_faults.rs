//! Faults found while a node runs: the node leaves Active through
//! ErrorProcessing (its on_error runs), then, if its params ask, the kit
//! configures and activates it again with backoff. Under a paused clock,
//! so the backoff's timing is exact.

use cncpick::kit::lifecycle::{
    ActiveGate, CallbackResult, Callbacks, Faults, LifecycleHandle, Recovery, State,
};
use cncpick::kit::retry::{Backoff, RetryPolicy};
use cncpick::kit::spin::create_node;
use cncpick::kit::testing::DomainLease;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

type Log = Arc<Mutex<Vec<(Duration, &'static str)>>>;

/// Callbacks that log what ran and when; configure fails while `failures`
/// is above zero, counting it down.
struct Camera {
    t0: Instant,
    log: Log,
    failures: Arc<AtomicU32>,
}

impl Camera {
    fn note(&self, what: &'static str) {
        self.log.lock().unwrap().push((self.t0.elapsed(), what));
    }
}

impl Callbacks for Camera {
    fn on_configure(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            self.note("configure");
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return CallbackResult::Error("no device".into());
            }
            CallbackResult::Success
        })
    }
    fn on_activate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            self.note("activate");
            CallbackResult::Success
        })
    }
    fn on_deactivate(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            self.note("deactivate");
            CallbackResult::Success
        })
    }
    fn on_error(&mut self) -> BoxFuture<'_, CallbackResult> {
        Box::pin(async move {
            self.note("error");
            CallbackResult::Success
        })
    }
}

struct Setup {
    _lease: DomainLease,
    _ctx: r2r::Context,
    handle: LifecycleHandle,
    faults: Faults,
    gate: ActiveGate,
    log: Log,
    t0: Instant,
    failures: Arc<AtomicU32>,
}

fn setup(recovery: Recovery) -> Setup {
    let lease = DomainLease::acquire().unwrap();
    std::env::set_var("ROS_DOMAIN_ID", lease.id.to_string());
    let ctx = r2r::Context::create().unwrap();
    let node = create_node(&ctx, "faulty", "/t").unwrap();
    let log = Log::default();
    let t0 = Instant::now();
    let failures = Arc::new(AtomicU32::new(0));
    let cbs = Camera {
        t0,
        log: log.clone(),
        failures: failures.clone(),
    };
    let gate = ActiveGate::default();
    let (faults, rx) = Faults::channel(&gate);
    let handle =
        LifecycleHandle::serve_with(&node, "/t/faulty", cbs, gate.clone(), Some(rx), recovery)
            .unwrap();
    Setup {
        _lease: lease,
        _ctx: ctx,
        handle,
        faults,
        gate,
        log,
        t0,
        failures,
    }
}

/// Brings the node up, raises a fault with configure failing `failures`
/// times after it, and returns the log from the fault on, in ms.
async fn fault_with(
    s: &Setup,
    failures: u32,
    bound: Duration,
    until: State,
) -> Vec<(u64, &'static str)> {
    assert!(s.handle.change_state("configure").await);
    assert!(s.handle.change_state("activate").await);
    assert!(s.gate.is_open());
    let fault_at = s.t0.elapsed();
    s.log.lock().unwrap().clear();
    s.failures.store(failures, Ordering::SeqCst);
    s.faults.raise("the camera was unplugged");
    assert!(wait_for(&s.handle, State::Unconfigured, Duration::from_millis(500)).await);
    assert!(
        !s.gate.is_open(),
        "frames stop as soon as the fault is taken"
    );
    tokio::time::sleep(bound).await;
    assert_eq!(s.handle.state(), until);
    let log = s.log.lock().unwrap().clone();
    log.iter()
        .map(|(t, w)| ((*t - fault_at).as_millis() as u64, *w))
        .collect()
}

async fn wait_for(h: &LifecycleHandle, state: State, bound: Duration) -> bool {
    let end = Instant::now() + bound;
    while h.state() != state && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.state() == state
}

fn policy() -> Recovery {
    Recovery::Reactivate(RetryPolicy {
        max_attempts: 5,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(3),
            jitter: 0.0,
        },
    })
}

#[tokio::test(start_paused = true)]
async fn a_fault_goes_through_error_processing_and_recovery_retries_with_backoff() {
    let s = setup(policy());
    // The device is still gone for two attempts (1 s, then 2 s later), then back (3 s later: the cap).
    let rel = fault_with(&s, 2, Duration::from_secs(30), State::Active).await;
    // on_deactivate is not run: the fault stands in for its result.
    assert_eq!(
        rel,
        vec![
            (0, "error"),
            (1000, "configure"),
            (1000, "error"),
            (3000, "configure"),
            (3000, "error"),
            (6000, "configure"),
            (6000, "activate"),
        ]
    );
    assert!(s.gate.is_open());
}

#[tokio::test(start_paused = true)]
async fn recovery_gives_up_after_its_attempts() {
    let s = setup(policy());
    let rel = fault_with(&s, 100, Duration::from_secs(60), State::Unconfigured).await;
    let configures: Vec<u64> = rel
        .iter()
        .filter(|(_, w)| *w == "configure")
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(configures, vec![1000, 3000, 6000, 9000, 12000]);
}

#[tokio::test(start_paused = true)]
async fn without_recovery_a_fault_leaves_the_node_unconfigured_and_a_fault_when_inactive_is_ignored(
) {
    let s = setup(Recovery::Stay);
    assert!(s.handle.change_state("configure").await);
    s.faults.raise("while inactive");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.handle.state(), State::Inactive);
    assert!(s.handle.change_state("activate").await);
    s.faults.raise("the stream went bad");
    assert!(wait_for(&s.handle, State::Unconfigured, Duration::from_millis(500)).await);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(s.handle.state(), State::Unconfigured);
}

/// Two reports of one incident (an alarm seen by the port watcher and by
/// the pick it broke): the second, queued behind the recovery from the
/// first, must not take the recovered node down again. A fault raised in
/// the new activation still does.
#[tokio::test(start_paused = true)]
async fn a_second_report_of_a_handled_fault_does_not_undo_the_recovery() {
    let s = setup(policy());
    assert!(s.handle.change_state("configure").await);
    assert!(s.handle.change_state("activate").await);
    let first = s.gate.activation();
    s.log.lock().unwrap().clear();
    s.faults.raise("ALARM:1 (seen by the watcher)");
    s.faults.raise("the pick's line was not answered: ALARM:1");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(s.handle.state(), State::Active);
    assert_eq!(s.gate.activation(), first + 1, "activated more than once");
    let steps: Vec<&str> = s.log.lock().unwrap().iter().map(|(_, w)| *w).collect();
    assert_eq!(steps, vec!["error", "configure", "activate"]);

    s.faults.raise("a new fault");
    assert!(wait_for(&s.handle, State::Unconfigured, Duration::from_millis(500)).await);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(s.handle.state(), State::Active);
    assert_eq!(s.gate.activation(), first + 2);
}

/// An e-stop is latched: the node leaves Active and does not bring itself
/// back (its recovery would move the machine); configured again by hand,
/// it runs.
#[tokio::test(start_paused = true)]
async fn a_latched_fault_is_not_recovered_from_until_configured_by_hand() {
    let s = setup(policy());
    assert!(s.handle.change_state("configure").await);
    assert!(s.handle.change_state("activate").await);
    s.log.lock().unwrap().clear();
    s.faults.latch("e-stop");
    assert!(wait_for(&s.handle, State::Unconfigured, Duration::from_millis(500)).await);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(s.handle.state(), State::Unconfigured);
    let steps: Vec<&str> = s.log.lock().unwrap().iter().map(|(_, w)| *w).collect();
    assert_eq!(steps, vec!["error"]);
    assert!(s.handle.change_state("configure").await);
    assert!(s.handle.change_state("activate").await);
}

/// Log lines, kept for a test to read.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A device gone for 25 attempts (a cable out for seconds, polled every
/// 0.1–0.2 s): the failed attempts 1, 10 and 20 are logged at their
/// levels, the 22 others only at debug, and the recovery says on which
/// attempt, and how long after the fault, the node came back.
#[tokio::test(start_paused = true)]
async fn a_long_recovery_logs_only_its_first_and_every_tenth_failed_attempt() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let s = setup(Recovery::Reactivate(RetryPolicy {
        max_attempts: 30,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_millis(200),
            jitter: 0.0,
        },
    }));
    let rel = fault_with(&s, 25, Duration::from_secs(10), State::Active).await;
    let configures = rel.iter().filter(|(_, w)| *w == "configure").count();
    assert_eq!(configures, 26, "25 failed attempts and the one that worked");

    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("recovery attempt failed"))
        .collect();
    assert_eq!(failed.len(), 3, "{text}");
    for (line, n) in failed
        .iter()
        .zip(["attempt=1 ", "attempt=10 ", "attempt=20 "])
    {
        assert!(line.contains(n) && line.contains("WARN"), "{line}");
    }
    let errors = text
        .lines()
        .filter(|l| l.contains("configuring raised an error: no device"))
        .count();
    assert_eq!(errors, 3, "{text}");
    let back: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("recovered from the fault"))
        .collect();
    assert_eq!(back.len(), 1, "{text}");
    // 0.1 s, then 0.2 s for each of the 25 others: back 5.1 s after the fault.
    assert!(
        back[0].contains("attempt=26") && back[0].contains("after_s=5.1"),
        "{}",
        back[0]
    );
}
