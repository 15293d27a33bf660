//! Bounded service calls. r2r has no call timeouts (its issue 102), so every
//! call goes through here: one deadline covers waiting for the server and
//! waiting for the reply. A server that is not there gets no request at all,
//! so nothing is left pending inside r2r.

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
    let deadline = tokio::time::Instant::now() + timeout;
    let ros = |source| CallError::Ros {
        service: service.to_string(),
        source,
    };
    match tokio::time::timeout_at(deadline, available).await {
        Err(_) => {
            return Err(CallError::Unavailable {
                service: service.to_string(),
                timeout_ms: timeout.as_millis(),
            })
        }
        Ok(r) => r.map_err(ros)?,
    }
    let reply = send().map_err(ros)?;
    match tokio::time::timeout_at(deadline, reply).await {
        Err(_) => Err(CallError::Timeout {
            service: service.to_string(),
            timeout_ms: timeout.as_millis(),
        }),
        Ok(r) => r.map_err(ros),
    }
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
    let available = r2r::Node::is_available(client).map_err(|source| CallError::Ros {
        service: service.to_string(),
        source,
    })?;
    bounded(service, timeout, available, || client.request(request)).await
}
