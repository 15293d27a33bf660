//! Bounded service calls. r2r has no call timeouts (its issue 102), so every
//! call goes through here: one deadline covers waiting for the server and
//! waiting for the reply. A server that is not there gets no request at all,
//! so nothing is left pending inside r2r; but for the `matched` forms, which
//! skip that wait while the last exchange was answered: a server that has
//! since gone gets one request, left pending, and the next waits again.

use std::future::Future;
use std::time::Duration;

/// The seed default bound for a service call (architecture.md).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("service {service}: no server within {timeout_ms} ms")]
    Unavailable { service: String, timeout_ms: u128 },
    #[error("service {service}: no reply within {timeout_ms} ms")]
    Timeout { service: String, timeout_ms: u128 },
    #[error("{what}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        what: String,
        attempts: u32,
        last: String,
    },
    #[error("{what}: {source}")]
    CircuitOpen {
        what: String,
        #[source]
        source: crate::kit::breaker::Rejected,
    },
    #[error("service {service}: {source}")]
    Ros {
        service: String,
        #[source]
        source: r2r::Error,
    },
}

/// How long a node, once active, looks for the servers it will call
/// ([`Caller::await_server_task`]): discovery across processes can take
/// seconds on a loaded machine.
pub const SERVER_WAIT: Duration = Duration::from_secs(30);

/// An r2r error of a call to `service`.
fn ros_error(service: &str) -> impl Fn(r2r::Error) -> CallError + '_ {
    move |source| CallError::Ros {
        service: service.to_string(),
        source,
    }
}

/// Waits for `available` (a server matched) within `timeout`; returns the
/// call's deadline.
async fn await_server<A>(
    service: &str,
    timeout: Duration,
    available: A,
) -> Result<tokio::time::Instant, CallError>
where
    A: Future<Output = Result<(), r2r::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, available).await {
        Err(_) => Err(CallError::Unavailable {
            service: service.to_string(),
            timeout_ms: timeout.as_millis(),
        }),
        Ok(r) => r.map(|()| deadline).map_err(ros_error(service)),
    }
}

/// The core of a bounded call, independent of r2r so it can be tested with a
/// paused clock: `available` resolves once a server is matched, `send` issues
/// the request and returns the reply future.
pub async fn bounded<R, A, S, F>(
    service: &str,
    timeout: Duration,
    available: A,
    send: S,
) -> Result<R, CallError>
where
    A: Future<Output = Result<(), r2r::Error>>,
    S: FnOnce() -> Result<F, r2r::Error>,
    F: Future<Output = Result<R, r2r::Error>>,
{
    let deadline = await_server(service, timeout, available).await?;
    let ros = ros_error(service);
    let reply = send().map_err(&ros)?;
    match tokio::time::timeout_at(deadline, reply).await {
        Err(_) => Err(CallError::Timeout {
            service: service.to_string(),
            timeout_ms: timeout.as_millis(),
        }),
        Ok(r) => r.map_err(ros),
    }
}

/// As [`bounded`], but a request unanswered `every` after it went is sent
/// again, the earlier ones still awaited, and the first reply to any of
/// them is taken. For idempotent queries only (a lifecycle node's
/// `get_state`): a server that has just started can answer its first
/// requests late while discovery completes, and a call that gave up on
/// them would throw those late answers away.
pub async fn hedged<R, A, S, F>(
    service: &str,
    timeout: Duration,
    every: Duration,
    available: A,
    mut send: S,
) -> Result<R, CallError>
where
    A: Future<Output = Result<(), r2r::Error>>,
    S: FnMut() -> Result<F, r2r::Error>,
    F: Future<Output = Result<R, r2r::Error>>,
{
    use futures::stream::{FuturesUnordered, StreamExt};
    let deadline = await_server(service, timeout, available).await?;
    let ros = ros_error(service);
    let mut waiting = FuturesUnordered::new();
    waiting.push(send().map_err(&ros)?);
    let mut again = tokio::time::Instant::now() + every.max(Duration::from_millis(1));
    loop {
        tokio::select! {
            r = waiting.next() => match r {
                Some(Ok(reply)) => return Ok(reply),
                // One request failed; the others may still be answered.
                Some(Err(e)) if waiting.is_empty() => return Err(ros(e)),
                _ => {}
            },
            _ = tokio::time::sleep_until(again.min(deadline)) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(CallError::Timeout {
                        service: service.to_string(),
                        timeout_ms: timeout.as_millis(),
                    });
                }
                waiting.push(send().map_err(&ros)?);
                again += every.max(Duration::from_millis(1));
            }
        }
    }
}

/// Answers a service request, logging (at warn, naming the service) when the
/// answer cannot be sent: the client may be gone, or the middleware may
/// refuse it. Every server in the cell answers through here, so that no
/// failed answer goes unseen.
pub fn reply<T>(req: r2r::ServiceRequest<T>, service: &str, response: T::Response)
where
    T: r2r::WrappedServiceTypeSupport + 'static,
{
    if let Err(e) = req.respond(response) {
        tracing::warn!(service, "answering {service}: {e}");
    }
}

/// [`hedged`] on an r2r client.
pub async fn call_hedged<T>(
    client: &r2r::Client<T>,
    service: &str,
    request: &T::Request,
    timeout: Duration,
    every: Duration,
) -> Result<T::Response, CallError>
where
    T: r2r::WrappedServiceTypeSupport + 'static,
{
    let available = r2r::Node::is_available(client).map_err(ros_error(service))?;
    hedged(service, timeout, every, available, || {
        client.request(request)
    })
    .await
}

/// Calls `client` with `request`, giving up after `timeout` in all.
pub async fn call<T>(
    client: &r2r::Client<T>,
    service: &str,
    request: &T::Request,
    timeout: Duration,
) -> Result<T::Response, CallError>
where
    T: r2r::WrappedServiceTypeSupport + 'static,
{
    let available = r2r::Node::is_available(client).map_err(ros_error(service))?;
    bounded(service, timeout, available, || client.request(request)).await
}

/// As [`call`], but skips the wait for the server when `matched` says the
/// last call got an answer: r2r resolves that wait only at the node's next
/// spin, so it can add up to one spin slice (10 ms) to a call. A call that
/// gets no answer clears `matched`, so the next one waits for the server
/// again; either way the whole call stays within `timeout`.
pub async fn call_matched<T>(
    client: &r2r::Client<T>,
    service: &str,
    request: &T::Request,
    timeout: Duration,
    matched: &std::sync::atomic::AtomicBool,
) -> Result<T::Response, CallError>
where
    T: r2r::WrappedServiceTypeSupport + 'static,
{
    bounded_matched(
        service,
        timeout,
        matched,
        || r2r::Node::is_available(client),
        || client.request(request),
    )
    .await
}

/// [`bounded`], waiting for the server (`available()`) only when `matched`
/// is clear; afterwards `matched` says whether this exchange was answered.
async fn bounded_matched<R, W, A, S, F>(
    what: &str,
    timeout: Duration,
    matched: &std::sync::atomic::AtomicBool,
    available: W,
    send: S,
) -> Result<R, CallError>
where
    W: FnOnce() -> Result<A, r2r::Error>,
    A: Future<Output = Result<(), r2r::Error>>,
    S: FnOnce() -> Result<F, r2r::Error>,
    F: Future<Output = Result<R, r2r::Error>>,
{
    use std::sync::atomic::Ordering;
    let wait = match matched.load(Ordering::Acquire) {
        true => None,
        false => Some(available().map_err(ros_error(what))?),
    };
    let available = async move {
        match wait {
            Some(w) => w.await,
            None => Ok(()),
        }
    };
    let r = bounded(what, timeout, available, send).await;
    matched.store(r.is_ok(), Ordering::Release);
    r
}

/// Sends an action goal, bounding the wait for the server and for the
/// goal's acceptance by `timeout`. Returns the goal handle, the result
/// future (bound it with the goal's own deadline) and the feedback stream.
/// As [`call_matched`], the wait for the server is skipped while `matched`
/// says the last goal was accepted: a goal is not held for the next spin.
#[allow(clippy::type_complexity)]
pub async fn send_goal<A>(
    client: &r2r::ActionClient<A>,
    action: &str,
    goal: A::Goal,
    timeout: Duration,
    matched: &std::sync::atomic::AtomicBool,
) -> Result<
    (
        r2r::ActionClientGoal<A>,
        impl Future<Output = Result<(r2r::GoalStatus, A::Result), r2r::Error>>,
        impl futures::Stream<Item = A::Feedback> + Unpin,
    ),
    CallError,
>
where
    A: r2r::WrappedActionTypeSupport + 'static,
{
    bounded_matched(
        action,
        timeout,
        matched,
        || r2r::Node::is_available(client),
        || client.send_goal_request(goal),
    )
    .await
}

/// A service client with everything the kit promises: a bound on every
/// attempt, retries with backoff and jitter that all carry one request id,
/// a circuit breaker, and a dead-letter log for what finally failed.
pub struct Caller<T: r2r::WrappedServiceTypeSupport + 'static> {
    client: r2r::Client<T>,
    service: String,
    pub timeout: Duration,
    pub policy: crate::kit::retry::RetryPolicy,
    breaker: std::sync::Mutex<crate::kit::breaker::Breaker>,
    dead_letters: crate::kit::retry::DeadLetters,
    seed: u64,
    calls: std::sync::atomic::AtomicU64,
    matched: std::sync::atomic::AtomicBool,
}

impl<T: r2r::WrappedServiceTypeSupport + 'static> Caller<T> {
    /// `seed` makes the jitter reproducible.
    pub fn new(
        node: &mut r2r::Node,
        service: &str,
        timeout: Duration,
        policy: crate::kit::retry::RetryPolicy,
        breaker: crate::kit::breaker::BreakerConfig,
        dead_letters: crate::kit::retry::DeadLetters,
        seed: u64,
    ) -> Result<Self, r2r::Error> {
        Ok(Caller {
            client: node.create_client::<T>(service, r2r::QosProfile::services_default())?,
            service: service.to_string(),
            timeout,
            policy,
            breaker: std::sync::Mutex::new(crate::kit::breaker::Breaker::new(breaker)),
            dead_letters,
            seed,
            calls: Default::default(),
            matched: Default::default(),
        })
    }

    pub fn breaker_state(&self) -> crate::kit::breaker::BreakerState {
        self.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
    }

    /// The underlying client (e.g. to wait for the server once at start).
    pub fn client(&self) -> &r2r::Client<T> {
        &self.client
    }

    /// Waits, within `within`, for the server to be matched, and if it is,
    /// lets the next call skip that wait (as after a call that got an
    /// answer: [`call_matched`]). r2r resolves the wait only at the node's
    /// next spin, so a node that calls this when it activates keeps up to
    /// one spin slice (10 ms) off its first call.
    pub async fn await_server(&self, within: Duration) -> Result<(), CallError> {
        let available = r2r::Node::is_available(&self.client).map_err(ros_error(&self.service))?;
        await_server(&self.service, within, available).await?;
        self.matched
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// [`Caller::await_server`] as a task of its own, for a node's
    /// activate: a server not there within `within` is only logged (the
    /// first call then waits for it, bounded as every call is).
    pub fn await_server_task(
        self: &std::sync::Arc<Self>,
        within: Duration,
    ) -> tokio::task::JoinHandle<()>
    where
        T: Send + Sync,
    {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.await_server(within).await {
                tracing::info!("{e}; its first call will wait for it");
            }
        })
    }

    /// Whether the next call skips the wait for the server.
    pub fn matched(&self) -> bool {
        self.matched.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Calls the service; `make(request_id)` builds the request, and every
    /// retry of this call gets the same request id.
    pub async fn call(&self, make: impl Fn(&str) -> T::Request) -> Result<T::Response, CallError> {
        use rand::SeedableRng;
        let k = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(self.seed.wrapping_add(k));
        let request_id = crate::kit::retry::new_request_id();
        crate::kit::retry::with_retry(
            &self.service,
            &request_id,
            &self.policy,
            &mut rng,
            &self.dead_letters,
            |_, id| {
                let req = make(id);
                async move {
                    let lock = || self.breaker.lock().unwrap_or_else(|e| e.into_inner());
                    lock()
                        .allow(tokio::time::Instant::now())
                        .map_err(|source| CallError::CircuitOpen {
                            what: self.service.clone(),
                            source,
                        })?;
                    let r = call_matched(
                        &self.client,
                        &self.service,
                        &req,
                        self.timeout,
                        &self.matched,
                    )
                    .await;
                    match &r {
                        Ok(_) => lock().record_success(),
                        Err(_) => lock().record_failure(tokio::time::Instant::now()),
                    }
                    r
                }
            },
        )
        .await
    }
}
