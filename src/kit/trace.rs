//! Tracing conventions: every log line about an object carries its UUID as
//! `trace_id`, the one id that follows it through every node (architecture.md).

/// A span for work on one object; enter it, or instrument a future with it.
pub fn object_span(object_id: &uuid::Uuid) -> tracing::Span {
    tracing::info_span!("object", trace_id = %object_id)
}

/// The trace id of a unique_identifier_msgs/UUID, as logged.
pub fn trace_id(uuid: &[u8]) -> String {
    uuid::Uuid::from_slice(uuid)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| format!("invalid-uuid:{}", uuid.len()))
}
