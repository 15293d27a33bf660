//! Bounded service calls: the deadline logic under a paused clock, and a real
//! r2r client against no server and against a real server over DDS.

use cncpick::kit::call::{bounded, call, hedged, CallError};
use cncpick::kit::spin::{create_node, Spinner};
use cncpick::kit::testing::DomainLease;
use cncpick::msgs::srv::GetObject;
use futures::StreamExt;
use std::future::{pending, ready};
use std::time::Duration;
use tokio::time::{sleep, Instant};

const BOUND: Duration = Duration::from_secs(2);

/// A ROS context on a domain of this test's own (nextest runs each test in
/// its own process, so setting the variable here is safe).
fn dds_context() -> (DomainLease, r2r::Context) {
    let lease = DomainLease::acquire().unwrap();
    std::env::set_var("ROS_DOMAIN_ID", lease.id.to_string());
    (lease, r2r::Context::create().unwrap())
}

/// Runs `f` to its end on a runtime whose clock is paused (it jumps to the
/// next timer when nothing else can run); returns its output and the
/// tokio time it took.
fn paused_timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let t0 = Instant::now();
        let out = f.await;
        (out, t0.elapsed())
    })
}

/// A future that yields `v` after `ms` milliseconds of (paused) tokio time.
async fn after<T>(ms: u64, v: T) -> Result<T, r2r::Error> {
    sleep(Duration::from_millis(ms)).await;
    Ok(v)
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_appears_is_given_up_exactly_at_the_bound() {
    let t0 = Instant::now();
    let r: Result<(), _> = bounded(
        "/s",
        BOUND,
        pending(),
        || -> Result<std::future::Ready<Result<(), r2r::Error>>, r2r::Error> {
            panic!("a request must not be sent when no server is there")
        },
    )
    .await;
    assert!(matches!(r, Err(CallError::Unavailable { .. })), "{r:?}");
    assert_eq!(t0.elapsed(), BOUND);
}

#[tokio::test(start_paused = true)]
async fn a_reply_that_never_comes_times_out_at_the_bound() {
    let t0 = Instant::now();
    let r: Result<u32, _> = bounded("/s", BOUND, ready(Ok(())), || Ok(pending())).await;
    assert!(matches!(r, Err(CallError::Timeout { .. })), "{r:?}");
    assert_eq!(t0.elapsed(), BOUND);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_server_and_the_reply_share_one_deadline() {
    let t0 = Instant::now();
    let r = bounded("/s", BOUND, after(1500, ()), || Ok(after(600, 7u32))).await;
    assert!(matches!(r, Err(CallError::Timeout { .. })), "{r:?}");
    assert_eq!(t0.elapsed(), BOUND);
}

#[tokio::test(start_paused = true)]
async fn a_reply_inside_the_bound_is_returned() {
    let r = bounded("/s", BOUND, after(1500, ()), || Ok(after(400, 7u32))).await;
    assert_eq!(r.unwrap(), 7);
}

const AGAIN: Duration = Duration::from_millis(250);

/// A server that answers each request 700 ms after it came (a node just
/// started): a plain call with a 500 ms bound never gets an answer; the
/// hedged one takes the first request's, at 700 ms, having sent three.
#[tokio::test(start_paused = true)]
async fn a_hedged_call_takes_the_first_late_answer_and_asks_again_meanwhile() {
    let t0 = Instant::now();
    let plain = bounded("/s", Duration::from_millis(500), ready(Ok(())), || {
        Ok(after(700, 0u32))
    })
    .await;
    assert!(matches!(plain, Err(CallError::Timeout { .. })), "{plain:?}");

    let t0_hedged = Instant::now();
    let mut sent = 0u32;
    let r = hedged("/s", BOUND, AGAIN, ready(Ok(())), || {
        sent += 1;
        Ok(after(700, sent))
    })
    .await;
    assert_eq!(r.unwrap(), 1, "the first request's answer comes first");
    assert_eq!(t0_hedged.elapsed(), Duration::from_millis(700));
    assert_eq!(sent, 3, "asked at 0, 250 and 500 ms");
    assert!(t0.elapsed() >= Duration::from_millis(1200));
}

/// Requests lost (never answered) until the server is really there: the
/// first one sent after 1 s is answered at once.
#[tokio::test(start_paused = true)]
async fn a_hedged_call_reaches_a_server_that_loses_its_first_requests() {
    let t0 = Instant::now();
    let r = hedged("/s", BOUND, AGAIN, ready(Ok(())), || {
        let lost = t0.elapsed() < Duration::from_secs(1);
        let at_ms = t0.elapsed().as_millis() as u32;
        Ok(async move {
            if lost {
                pending::<()>().await;
            }
            Ok(at_ms)
        })
    })
    .await;
    assert_eq!(r.unwrap(), 1000);
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
}

/// No answer to any: given up exactly at the bound, having asked every
/// 250 ms; and no request at all when no server appears.
#[tokio::test(start_paused = true)]
async fn a_hedged_call_that_is_never_answered_gives_up_at_the_bound() {
    let t0 = Instant::now();
    let mut sent = 0;
    let r: Result<u32, _> = hedged("/s", BOUND, AGAIN, ready(Ok(())), || {
        sent += 1;
        Ok(pending())
    })
    .await;
    assert!(matches!(r, Err(CallError::Timeout { .. })), "{r:?}");
    assert_eq!(t0.elapsed(), BOUND);
    assert_eq!(sent, 8, "at 0, 250, ..., 1750 ms");

    let t1 = Instant::now();
    let r: Result<u32, _> = hedged(
        "/s",
        BOUND,
        AGAIN,
        pending(),
        || -> Result<std::future::Pending<_>, _> {
            panic!("a request must not be sent when no server is there")
        },
    )
    .await;
    assert!(matches!(r, Err(CallError::Unavailable { .. })), "{r:?}");
    assert_eq!(t1.elapsed(), BOUND);
}

#[test]
fn an_r2r_call_with_no_server_gives_up_at_its_bound() {
    let (_lease, ctx) = dds_context();
    let node = create_node(&ctx, "bounded_call_client", "").unwrap();
    let client = node
        .lock()
        .create_client::<GetObject::Service>(
            "/nobody/get_object",
            r2r::QosProfile::services_default(),
        )
        .unwrap();
    let mut spinner = Spinner::start(node.clone());
    let (r, elapsed) = paused_timed(call(
        &client,
        "/nobody/get_object",
        &GetObject::Request::default(),
        BOUND,
    ));
    spinner.stop();
    let err = r.expect_err("there is no server");
    assert!(matches!(err, CallError::Unavailable { .. }), "{err:?}");
    assert_eq!(elapsed, BOUND);
    assert!(err.to_string().contains("/nobody/get_object"), "{err}");
}

#[test]
fn an_r2r_call_to_a_live_server_returns_its_reply() {
    let (_lease, ctx) = dds_context();
    let node = create_node(&ctx, "bounded_call_pair", "").unwrap();
    let (client, mut requests) = {
        let mut n = node.lock();
        let qos = r2r::QosProfile::services_default();
        (
            n.create_client::<GetObject::Service>("/pair/get_object", qos.clone())
                .unwrap(),
            n.create_service::<GetObject::Service>("/pair/get_object", qos)
                .unwrap(),
        )
    };
    let mut spinner = Spinner::start(node.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let reply = rt.block_on(async {
        let server = tokio::spawn(async move {
            let req = requests.next().await.expect("one request");
            let mut resp = GetObject::Response {
                found: true,
                ..Default::default()
            };
            resp.object.object_id = req.message.object_id.clone();
            resp.object.vision_id = "vision_1_2_3".into();
            req.respond(resp).unwrap();
        });
        let mut req = GetObject::Request::default();
        req.object_id.uuid = vec![9; 16];
        // Generous: discovery on a loaded machine can take seconds.
        let r = call(&client, "/pair/get_object", &req, Duration::from_secs(20)).await;
        server.await.unwrap();
        r
    });
    spinner.stop();
    let reply = reply.expect("the server answers");
    assert!(reply.found);
    assert_eq!(reply.object.object_id.uuid, vec![9; 16]);
    assert_eq!(reply.object.vision_id, "vision_1_2_3");
}

#[test]
fn a_caller_retries_a_silent_server_under_one_request_id_then_opens_its_breaker_and_dead_letters() {
    use cncpick::kit::breaker::{BreakerConfig, BreakerState};
    use cncpick::kit::call::Caller;
    use cncpick::kit::retry::{Backoff, DeadLetters, RetryPolicy};
    use cncpick::msgs::srv::TransitionObject;

    let (_lease, ctx) = dds_context();
    let node = create_node(&ctx, "caller_test", "").unwrap();
    let dead = DeadLetters::in_memory();
    let (caller, mut requests) = {
        let mut n = node.lock();
        let policy = RetryPolicy {
            max_attempts: 3,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                multiplier: 2.0,
                max: Duration::from_secs(1),
                jitter: 0.0,
            },
        };
        let breaker = BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(60),
        };
        let c = Caller::<TransitionObject::Service>::new(
            &mut n,
            "/silent/transition",
            Duration::from_millis(200),
            policy,
            breaker,
            dead.clone(),
            7,
        )
        .unwrap();
        let s = n
            .create_service::<TransitionObject::Service>(
                "/silent/transition",
                r2r::QosProfile::services_default(),
            )
            .unwrap();
        (c, s)
    };
    let mut spinner = Spinner::start(node.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (result, seen, second) = rt.block_on(async {
        // Real time throughout: with real DDS wake-ups a paused clock would
        // race them. The exact attempt times are pinned by retry.rs.
        tokio::time::timeout(
            Duration::from_secs(20),
            r2r::Node::is_available(caller.client()).unwrap(),
        )
        .await
        .expect("server discovered")
        .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let server = tokio::spawn(async move {
            while let Some(req) = requests.next().await {
                s2.lock().unwrap().push(req.message.request_id.clone());
                // Never answered.
            }
        });
        let result = caller
            .call(|id| TransitionObject::Request {
                request_id: id.to_string(),
                ..Default::default()
            })
            .await;
        let second = caller.call(|_| TransitionObject::Request::default()).await;
        server.abort();
        let seen = seen.lock().unwrap().clone();
        (result, seen, second)
    });
    spinner.stop();
    assert!(
        matches!(result, Err(CallError::GaveUp { attempts: 3, .. })),
        "{result:?}"
    );
    assert!(seen.len() <= 3 && !seen.is_empty(), "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "one request id across retries: {seen:?}"
    );
    assert_eq!(caller.breaker_state(), BreakerState::Open);
    let second = second.expect_err("the breaker refuses while open");
    assert!(
        matches!(second, CallError::GaveUp { ref last, .. } if last.contains("circuit open")),
        "{second:?}"
    );
    assert_eq!(dead.entries().len(), 2);
    assert_eq!(dead.entries()[0].attempts, 3);
}

/// A caller with the state manager's transition service on `name`.
fn transition_caller(
    n: &mut r2r::Node,
    name: &str,
) -> cncpick::kit::call::Caller<cncpick::msgs::srv::TransitionObject::Service> {
    use cncpick::kit::breaker::BreakerConfig;
    use cncpick::kit::retry::{DeadLetters, RetryPolicy};
    cncpick::kit::call::Caller::new(
        n,
        name,
        BOUND,
        RetryPolicy::default(),
        BreakerConfig::default(),
        DeadLetters::in_memory(),
        0,
    )
    .unwrap()
}

/// A node looks for its server when it activates, so that its first call
/// does not wait for the next spin to learn what it already knows: the
/// caller is marked matched once the server is found, and not before.
#[test]
fn a_caller_that_found_its_server_is_marked_matched_and_its_call_answered() {
    use cncpick::msgs::srv::TransitionObject;
    let (_lease, ctx) = dds_context();
    let node = create_node(&ctx, "await_server_pair", "").unwrap();
    let (caller, mut requests) = {
        let mut n = node.lock();
        let c = transition_caller(&mut n, "/early/transition");
        let s = n
            .create_service::<TransitionObject::Service>(
                "/early/transition",
                r2r::QosProfile::services_default(),
            )
            .unwrap();
        (std::sync::Arc::new(c), s)
    };
    assert!(
        !caller.matched(),
        "nothing is matched before it is looked for"
    );
    let mut spinner = Spinner::start(node.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (found, matched, reply) = rt.block_on(async {
        // Generous: discovery on a loaded machine can take seconds.
        let found = caller
            .await_server_task(Duration::from_secs(20))
            .await
            .map(|()| caller.matched());
        let matched = caller.matched();
        let server = tokio::spawn(async move {
            let req = requests.next().await.expect("one request");
            let resp = TransitionObject::Response {
                accepted: true,
                error: req.message.request_id.clone(),
                ..Default::default()
            };
            req.respond(resp).unwrap();
        });
        let reply = caller
            .call(|id| TransitionObject::Request {
                request_id: id.to_string(),
                ..Default::default()
            })
            .await;
        server.await.unwrap();
        (found, matched, reply)
    });
    spinner.stop();
    assert!(found.is_ok(), "{found:?}");
    assert!(
        matched,
        "the server was found: the first call skips the wait"
    );
    let reply = reply.expect("the server answers");
    assert!(reply.accepted);
    assert!(
        !reply.error.is_empty(),
        "the reply to this call's request id"
    );
    assert!(caller.matched());
}

/// No server: told so exactly at the bound, and the first call will wait.
#[test]
fn a_caller_with_no_server_is_told_at_its_bound_and_stays_unmatched() {
    let (_lease, ctx) = dds_context();
    let node = create_node(&ctx, "await_server_alone", "").unwrap();
    let caller = transition_caller(&mut node.lock(), "/nobody/transition");
    let mut spinner = Spinner::start(node.clone());
    let (r, elapsed) = paused_timed(caller.await_server(BOUND));
    spinner.stop();
    let err = r.expect_err("there is no server");
    assert!(matches!(err, CallError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("/nobody/transition"), "{err}");
    assert_eq!(elapsed, BOUND);
    assert!(!caller.matched());
}

/// No action server: a goal waits for one and is told it is not there,
/// exactly at the bound. A goal sent as if the server were matched (the
/// last one was accepted) does not wait: it goes out at once and is told
/// at the bound that no answer came; either way the flag ends clear, so
/// the next goal waits for the server again.
#[test]
fn a_pick_goal_with_no_action_server_gives_up_at_its_bound_waiting_for_it_unless_matched() {
    use cncpick::kit::call::send_goal;
    use cncpick::msgs::action::PickObject;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (_lease, ctx) = dds_context();
    let node = create_node(&ctx, "goal_test", "").unwrap();
    let client = node
        .lock()
        .create_action_client::<PickObject::Action>("/cell/cnc_9/pick")
        .unwrap();
    let mut spinner = Spinner::start(node.clone());
    let goal = |matched: bool| {
        let flag = AtomicBool::new(matched);
        let (r, elapsed) = paused_timed(send_goal(
            &client,
            "/cell/cnc_9/pick",
            PickObject::Goal::default(),
            BOUND,
            &flag,
        ));
        (r.err(), elapsed, flag.load(Ordering::Acquire))
    };
    let (waited, waited_s, waited_flag) = goal(false);
    let (sent, sent_s, sent_flag) = goal(true);
    spinner.stop();
    assert!(
        matches!(waited, Some(CallError::Unavailable { .. })),
        "{waited:?}"
    );
    assert!(
        matches!(sent, Some(CallError::Timeout { .. })),
        "sent without waiting for the server: {sent:?}"
    );
    assert_eq!((waited_s, sent_s), (BOUND, BOUND));
    assert!(
        !waited_flag && !sent_flag,
        "unanswered: the next goal waits"
    );
}
