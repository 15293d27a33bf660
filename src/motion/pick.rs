//! One pick, carried out over a GRBL connection: plan it (every target
//! checked), stream the approach and wait for it, start the descent at its
//! time, ride with the object, ask the vacuum sensor, carry and release.
//! Time comes from an injected clock (the sim's, or the node's), and every
//! wait is bounded by the plan's own durations plus the response timeout.

use super::grbl::client::{Answer, Event, Grbl, GrblError};
use super::grbl::reply::{self, Reply};
use super::plan::{Line, Phase, PlanError, Planner};
use crate::kinematics::{Intercept, NoIntercept, Picker, Trajectory};
use nalgebra::Vector3;
use std::time::Duration;

/// The descent line is sent this long before its planned start (the link
/// and the planner's own delay).
pub const SEND_LEAD_S: f64 = 0.004;

/// What to pick and where it goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Job {
    pub traj: Trajectory,
    pub height_m: f64,
    pub bin_m: (f64, f64),
    pub belt_mps: f64,
    pub release_dwell_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Taken and released over the bin.
    Picked,
    /// Taken, then lost before the bin.
    Dropped,
    /// Not taken.
    Missed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub outcome: Outcome,
    /// Where the nozzle ended, machine mm.
    pub at_mm: Vector3<f64>,
    pub intercept: Intercept,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickError {
    #[error("cannot reach it: {0}")]
    Unreachable(#[from] NoIntercept),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Grbl(#[from] GrblError),
    #[error("{line:?} refused: error:{code} ({})", reply::error_text(*code))]
    Refused { line: String, code: u8 },
    /// The approach ended too late for the planned contact (the window).
    #[error("the approach ended {by_s:.3} s after the descent was due; pick abandoned")]
    Late { by_s: f64 },
}

/// The clock a pick runs on: `now_s`, and how fast it runs against the
/// wall (a simulation may run faster than real time).
pub struct Clock<'a> {
    pub now_s: &'a (dyn Fn() -> f64 + Sync),
    pub time_scale: f64,
}

impl Clock<'_> {
    async fn sleep_until(&self, t_s: f64) {
        let dt = t_s - (self.now_s)();
        if dt > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(dt / self.time_scale)).await;
        }
    }
}

/// Streams `lines` at once (the client keeps them within the receive
/// buffer) and waits for every reply, each bounded by the time the lines
/// before it take plus the response timeout.
async fn stream(g: &Grbl, lines: &[Line], response: Duration) -> Result<(), PickError> {
    let mut total_s = 0.0;
    let waits: Vec<_> = lines
        .iter()
        .map(|l| {
            total_s += l.duration_s;
            g.send_within(&l.text, response + Duration::from_secs_f64(total_s * 1.5))
        })
        .collect();
    for (l, r) in lines.iter().zip(futures::future::join_all(waits).await) {
        match r? {
            Answer::Ok => {}
            Answer::Error(code) => {
                return Err(PickError::Refused {
                    line: l.text.clone(),
                    code,
                })
            }
        }
    }
    Ok(())
}

/// The vacuum sensor (probe input, `Pn:P`) in the next status report.
async fn holding(g: &Grbl, response: Duration) -> Result<bool, PickError> {
    let mut events = g.subscribe();
    let _ = g.realtime(super::grbl::client::rt::STATUS);
    let wait = async {
        loop {
            match events.recv().await {
                Ok(Event::Line(Reply::Status(s))) => {
                    return Ok(s.pins.is_some_and(|p| p.contains('P')))
                }
                Ok(Event::Disconnected(why)) => {
                    return Err(PickError::Grbl(GrblError::Disconnected {
                        path: g.path().into(),
                        why,
                    }))
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => {
                    return Err(PickError::Grbl(GrblError::Disconnected {
                        path: g.path().into(),
                        why: "the port thread has stopped".into(),
                    }))
                }
            }
        }
    };
    tokio::time::timeout(response, wait)
        .await
        .unwrap_or_else(|_| {
            Err(PickError::Grbl(GrblError::Timeout {
                path: g.path().into(),
                line: "?".into(),
                timeout_ms: response.as_millis(),
            }))
        })
}

/// Picks `job` with the gantry at `from_mm`. `phase` hears each phase as it
/// starts. Every line is planned, and every target checked, before the
/// first one is sent.
pub async fn pick(
    g: &Grbl,
    picker: &Picker,
    from_mm: Vector3<f64>,
    job: &Job,
    clock: &Clock<'_>,
    response: Duration,
    mut phase: impl FnMut(Phase),
) -> Result<Done, PickError> {
    let i = picker.intercept(&job.traj, job.height_m, from_mm, (clock.now_s)())?;
    let plan = Planner { picker };
    let approach = plan.approach(from_mm, &i, job.belt_mps)?;
    let contact = plan.contact(&i, job.belt_mps)?;
    let lifted = contact
        .iter()
        .filter_map(|l| l.target_mm)
        .next_back()
        .unwrap_or(from_mm);
    let carry = plan.carry(lifted, job.bin_m, job.release_dwell_s)?;

    phase(Phase::Approach);
    let t_start = (clock.now_s)();
    let mut sync = approach.clone();
    sync.push(Line {
        text: "G4 P0".into(),
        target_mm: None,
        duration_s: 0.0,
    });
    stream(g, &sync, response).await?;
    let due = i.descend_at_s - SEND_LEAD_S;
    let planned: f64 = approach.iter().map(|l| l.duration_s).sum();
    tracing::debug!(
        planned_s = planned,
        took_s = (clock.now_s)() - t_start,
        slack_s = due - t_start - planned,
        "approach"
    );
    let late = (clock.now_s)() - due;
    if late > 0.0 {
        return Err(PickError::Late { by_s: late });
    }
    clock.sleep_until(due).await;

    phase(Phase::Contact);
    stream(g, &contact, response).await?;
    if !holding(g, response).await? {
        stream(g, &carry[1..2], response).await?; // vacuum off
        return Ok(Done {
            outcome: Outcome::Missed,
            at_mm: lifted,
            intercept: i,
        });
    }

    phase(Phase::Carry);
    stream(g, &[carry[0].clone(), carry[3].clone()], response).await?;
    let still = holding(g, response).await?;
    stream(g, &carry[1..], response).await?;
    Ok(Done {
        outcome: if still {
            Outcome::Picked
        } else {
            Outcome::Dropped
        },
        at_mm: carry[0].target_mm.unwrap_or(lifted),
        intercept: i,
    })
}
