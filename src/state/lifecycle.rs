//! The object lifecycle of architecture.md, and nothing else:
//!
//! ```text
//! DETECTED ──assign──▶ ASSIGNED ──start──▶ PICKING ──▶ PICKED | DROPPED | MISSED
//!    │  ▲                 │
//!    │  └───revoke/timeout┘
//!    ├──────────────▶ BYPASSED
//!    └──────────────▶ MISSED
//! ```

/// An object's state; the numbers are cncpick_msgs/ObjectState's.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ObjState {
    Detected = 1,
    Assigned = 2,
    Picking = 3,
    Picked = 4,
    Dropped = 5,
    Missed = 6,
    Bypassed = 7,
}

pub const ALL: [ObjState; 7] = [
    ObjState::Detected,
    ObjState::Assigned,
    ObjState::Picking,
    ObjState::Picked,
    ObjState::Dropped,
    ObjState::Missed,
    ObjState::Bypassed,
];

impl ObjState {
    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Option<ObjState> {
        ALL.iter().copied().find(|s| s.id() == id)
    }

    pub fn label(self) -> &'static str {
        match self {
            ObjState::Detected => "DETECTED",
            ObjState::Assigned => "ASSIGNED",
            ObjState::Picking => "PICKING",
            ObjState::Picked => "PICKED",
            ObjState::Dropped => "DROPPED",
            ObjState::Missed => "MISSED",
            ObjState::Bypassed => "BYPASSED",
        }
    }

    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ObjState::Picked | ObjState::Dropped | ObjState::Missed | ObjState::Bypassed
        )
    }

    /// Whether the object is held by a CNC in this state (so transitions
    /// out of it must name that CNC and its current epoch).
    pub fn held_by_cnc(self) -> bool {
        matches!(self, ObjState::Assigned | ObjState::Picking)
    }
}

impl std::fmt::Display for ObjState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Whether `from → to` is one of the lifecycle's transitions.
pub fn legal(from: ObjState, to: ObjState) -> bool {
    use ObjState::*;
    matches!(
        (from, to),
        (Detected, Assigned)
            | (Detected, Bypassed)
            | (Detected, Missed)
            | (Assigned, Picking)
            | (Assigned, Detected)
            | (Picking, Picked)
            | (Picking, Dropped)
            | (Picking, Missed)
    )
}

/// Whether the transition needs a CNC (and its epoch): taking an object
/// (assign), and everything that happens to it while a CNC holds it.
pub fn needs_cnc(from: ObjState, to: ObjState) -> bool {
    to == ObjState::Assigned || from.held_by_cnc()
}

/// The state a pick's outcome (cncpick_msgs/PickOutcome) leaves its object
/// in: PICKED or DROPPED as it happened, and MISSED for every way a pick
/// ends without the object (missed, aborted, rejected, a fault). None for a
/// value that is no PickOutcome.
pub fn after_pick(outcome: u8) -> Option<ObjState> {
    use crate::msgs::msg::PickOutcome as P;
    let missed = [
        P::MISSED as u8,
        P::ABORTED as u8,
        P::REJECTED as u8,
        P::FAULT as u8,
    ];
    if outcome == P::PICKED as u8 {
        Some(ObjState::Picked)
    } else if outcome == P::DROPPED as u8 {
        Some(ObjState::Dropped)
    } else if missed.contains(&outcome) {
        Some(ObjState::Missed)
    } else {
        None
    }
}

/// What settling a CNC's earlier epochs does to an object they held (the
/// CNC's new epoch, and recovery for what is not a pick in flight): the
/// chain of (legal) transitions that brings it to a state nobody holds.
/// `reachable`: its predicted position is still upstream of the last reach
/// window. The holder's epoch has been raised, so it can no longer move
/// the object: an assignment is revoked (back to DETECTED, and on to
/// MISSED if it can no longer be reached); a pick in flight whose outcome
/// the CNC did not report is never retried, so it ends as MISSED.
pub fn reconcile(
    state: ObjState,
    reachable: bool,
) -> &'static [(ObjState, ObjState, &'static str)] {
    use ObjState::*;
    const REVOKE: (ObjState, ObjState, &str) = (
        Assigned,
        Detected,
        "recovery: assignment revoked (CNC epochs raised)",
    );
    const PASSED: (ObjState, ObjState, &str) =
        (Detected, Missed, "recovery: past the last reach window");
    match (state, reachable) {
        (Detected, true) => &[],
        (Detected, false) => &[PASSED],
        (Assigned, true) => &[REVOKE],
        (Assigned, false) => &[REVOKE, PASSED],
        (Picking, _) => &[(
            Picking,
            Missed,
            "recovery: a pick was in flight; its outcome is unknown, so it is not retried",
        )],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_documented_transitions_are_legal() {
        let mut n = 0;
        for a in ALL {
            for b in ALL {
                if legal(a, b) {
                    n += 1;
                    assert!(!a.is_terminal(), "{a} -> {b}");
                }
            }
        }
        assert_eq!(n, 8);
        for s in ALL {
            assert_eq!(ObjState::from_id(s.id()), Some(s));
        }
        assert_eq!(ObjState::from_id(0), None);
        assert_eq!(ObjState::from_id(8), None);
    }

    #[test]
    fn a_picks_outcome_leaves_its_object_where_the_lifecycle_allows() {
        use crate::msgs::msg::PickOutcome as P;
        let states: Vec<_> = (0..=6u8).map(after_pick).collect();
        assert_eq!(P::PICKED as u8, 0);
        assert_eq!(P::FAULT as u8, 5);
        use ObjState::*;
        assert_eq!(
            states,
            [
                Some(Picked),
                Some(Dropped),
                Some(Missed),
                Some(Missed),
                Some(Missed),
                Some(Missed),
                None
            ]
        );
        for s in states.into_iter().flatten() {
            assert!(legal(Picking, s), "{s}");
        }
    }

    #[test]
    fn recovery_leaves_every_object_unheld_by_legal_steps() {
        for s in ALL {
            for reachable in [true, false] {
                let steps = reconcile(s, reachable);
                let mut at = s;
                for &(from, to, _) in steps {
                    assert_eq!(from, at);
                    assert!(legal(from, to), "{from} -> {to}");
                    at = to;
                }
                assert!(!at.held_by_cnc(), "{s} ends held");
                // Terminal objects are left alone; an unreachable one ends terminal.
                if s.is_terminal() {
                    assert!(steps.is_empty(), "{s} is terminal");
                }
                if !reachable {
                    assert!(at.is_terminal(), "{s} unreachable ends {at}");
                }
            }
        }
        assert_eq!(
            reconcile(ObjState::Assigned, true).last().unwrap().1,
            ObjState::Detected
        );
    }
}
