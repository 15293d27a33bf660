//! Pure logic of the example node: which transition, if any, it is told to
//! fail (tests use this to drive ErrorProcessing), and its tick counter.

use crate::kit::lifecycle::core::Callback;
use crate::kit::lifecycle::CallbackResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    Failure,
    Error,
}

/// Makes one callback fail, for tests of the failure paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailPlan {
    pub on: Option<(Callback, FailMode)>,
}

impl FailPlan {
    /// `on` is a transition label (configure, activate, deactivate, cleanup,
    /// shutdown) or empty; `mode` is failure or error.
    pub fn parse(on: &str, mode: &str) -> Result<FailPlan, String> {
        let cb = match on {
            "" => return Ok(FailPlan::default()),
            "configure" => Callback::Configure,
            "activate" => Callback::Activate,
            "deactivate" => Callback::Deactivate,
            "cleanup" => Callback::Cleanup,
            "shutdown" => Callback::Shutdown,
            other => {
                return Err(format!(
                "--fail-on: {other:?} is not one of configure, activate, deactivate, cleanup, shutdown"
            ))
            }
        };
        let mode = match mode {
            "failure" => FailMode::Failure,
            "error" => FailMode::Error,
            other => return Err(format!("--fail-mode: {other:?} is not failure or error")),
        };
        Ok(FailPlan {
            on: Some((cb, mode)),
        })
    }

    pub fn result_for(&self, cb: Callback) -> CallbackResult {
        match self.on {
            Some((c, FailMode::Failure)) if c == cb => {
                CallbackResult::Failure(format!("told to fail {cb:?}"))
            }
            Some((c, FailMode::Error)) if c == cb => {
                CallbackResult::Error(format!("told to raise an error in {cb:?}"))
            }
            _ => CallbackResult::Success,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_callback_fails_in_the_named_way() {
        let plan = FailPlan::parse("activate", "error").unwrap();
        assert_eq!(
            plan.result_for(Callback::Configure),
            CallbackResult::Success
        );
        assert!(matches!(
            plan.result_for(Callback::Activate),
            CallbackResult::Error(_)
        ));
    }

    #[test]
    fn an_unknown_transition_or_mode_is_named_in_the_error() {
        assert!(FailPlan::parse("explode", "error")
            .unwrap_err()
            .contains("\"explode\""));
        assert!(FailPlan::parse("configure", "maybe")
            .unwrap_err()
            .contains("--fail-mode"));
    }
}
