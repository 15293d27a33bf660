//! Fault injection (seed 7.1 / 7.2): faults scheduled in params, as
//! `"<at_s> <kind> [key=value ...]"`, plus random ones drawn from the seed.
//! The plan is fixed when the world is made, so a seed gives the same faults.

use super::rng::stream;
use rand::Rng;
use rand_distr::{Distribution, Exp};

/// Every kind of fault, as written in params.
pub const KINDS: &[&str] = &[
    "grbl_alarm",
    "disconnect",
    "garbage",
    "vacuum_failure",
    "frame_drop",
    "frame_late",
    "belt_stop",
];

#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// An unsolicited ALARM:`code` from the board.
    GrblAlarm { cnc: usize, code: u8 },
    /// The serial line goes away (PTY closed) and comes back, as a new
    /// board, after `for_s`.
    Disconnect { cnc: usize, for_s: f64 },
    /// `bytes` bytes of line noise towards the host.
    Garbage { cnc: usize, bytes: usize },
    /// The nozzle has no suction for `for_s`.
    VacuumFailure { cnc: usize, for_s: f64 },
    /// No frames for `for_s`.
    FrameDrop { for_s: f64 },
    /// Frames arrive `delay_ms` late for `for_s` (stamps stay true).
    FrameLate { delay_ms: f64, for_s: f64 },
    /// The belt stops for `for_s`.
    BeltStop { for_s: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub at_s: f64,
    pub kind: FaultKind,
}

impl FaultSpec {
    /// When the fault's effect ends (its start for instant faults).
    pub fn until_s(&self) -> f64 {
        self.at_s
            + match self.kind {
                FaultKind::Disconnect { for_s, .. }
                | FaultKind::VacuumFailure { for_s, .. }
                | FaultKind::FrameDrop { for_s }
                | FaultKind::FrameLate { for_s, .. }
                | FaultKind::BeltStop { for_s } => for_s,
                FaultKind::GrblAlarm { .. } | FaultKind::Garbage { .. } => 0.0,
            }
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            FaultKind::GrblAlarm { .. } => "grbl_alarm",
            FaultKind::Disconnect { .. } => "disconnect",
            FaultKind::Garbage { .. } => "garbage",
            FaultKind::VacuumFailure { .. } => "vacuum_failure",
            FaultKind::FrameDrop { .. } => "frame_drop",
            FaultKind::FrameLate { .. } => "frame_late",
            FaultKind::BeltStop { .. } => "belt_stop",
        }
    }

    pub fn cnc(&self) -> Option<usize> {
        match self.kind {
            FaultKind::GrblAlarm { cnc, .. }
            | FaultKind::Disconnect { cnc, .. }
            | FaultKind::Garbage { cnc, .. }
            | FaultKind::VacuumFailure { cnc, .. } => Some(cnc),
            _ => None,
        }
    }
}

/// Parses the `faults` parameter. Errors name the entry and the word.
pub fn parse_faults(entries: &[String], cnc_ids: &[&str]) -> Result<Vec<FaultSpec>, String> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| parse_fault(e, cnc_ids).map_err(|why| format!("faults[{i}] {e:?}: {why}")))
        .collect()
}

/// Parses a fault injected at `now_s`: `"<kind> [key=value ...]"` (the
/// `sim/inject_fault` topic). Errors name the entry and the word.
pub fn parse_injected(entry: &str, now_s: f64, cnc_ids: &[&str]) -> Result<FaultSpec, String> {
    parse_fault(&format!("{now_s} {entry}"), cnc_ids).map_err(|why| format!("{entry:?}: {why}"))
}

fn parse_fault(entry: &str, cnc_ids: &[&str]) -> Result<FaultSpec, String> {
    let mut words = entry.split_whitespace();
    let at_s: f64 = words
        .next()
        .ok_or("empty; write \"<at_s> <kind> [key=value ...]\"")?
        .parse()
        .ok()
        .filter(|t: &f64| t.is_finite() && *t >= 0.0)
        .ok_or("the first word must be the time in seconds, ≥ 0")?;
    let kind = words
        .next()
        .ok_or_else(|| format!("no kind; use one of {}", KINDS.join(", ")))?;
    let mut args: Vec<(&str, &str)> = Vec::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("{w:?} is not key=value"))?;
        args.push((k, v));
    }
    let mut used = Vec::new();
    let mut num = |key: &'static str, default: f64, lo: f64, hi: f64| -> Result<f64, String> {
        used.push(key);
        match args.iter().find(|(k, _)| *k == key) {
            None => Ok(default),
            Some((_, v)) => v
                .parse::<f64>()
                .ok()
                .filter(|x| (lo..=hi).contains(x))
                .ok_or_else(|| format!("{key}={v} is not a number in [{lo}, {hi}]")),
        }
    };
    let cnc = |used: &mut Vec<&'static str>| -> Result<usize, String> {
        used.push("cnc");
        let v = args
            .iter()
            .find(|(k, _)| *k == "cnc")
            .map(|(_, v)| *v)
            .ok_or("needs cnc=<id>")?;
        cnc_ids
            .iter()
            .position(|id| *id == v)
            .ok_or_else(|| format!("cnc={v} is not in cnc_ids ({})", cnc_ids.join(", ")))
    };
    let kind = match kind {
        "grbl_alarm" => {
            let code = num("code", 1.0, 1.0, 10.0)? as u8;
            FaultKind::GrblAlarm {
                cnc: cnc(&mut used)?,
                code,
            }
        }
        "disconnect" => {
            let for_s = num("for_s", 2.0, 0.0, 3600.0)?;
            FaultKind::Disconnect {
                cnc: cnc(&mut used)?,
                for_s,
            }
        }
        "garbage" => {
            let bytes = num("bytes", 16.0, 1.0, 4096.0)? as usize;
            FaultKind::Garbage {
                cnc: cnc(&mut used)?,
                bytes,
            }
        }
        "vacuum_failure" => {
            let for_s = num("for_s", 5.0, 0.0, 3600.0)?;
            FaultKind::VacuumFailure {
                cnc: cnc(&mut used)?,
                for_s,
            }
        }
        "frame_drop" => FaultKind::FrameDrop {
            for_s: num("for_s", 1.0, 0.0, 3600.0)?,
        },
        "frame_late" => FaultKind::FrameLate {
            delay_ms: num("delay_ms", 200.0, 0.0, 60000.0)?,
            for_s: num("for_s", 1.0, 0.0, 3600.0)?,
        },
        "belt_stop" => FaultKind::BeltStop {
            for_s: num("for_s", 3.0, 0.0, 3600.0)?,
        },
        other => return Err(format!("kind {other:?} is not one of {}", KINDS.join(", "))),
    };
    if let Some((k, _)) = args.iter().find(|(k, _)| !used.contains(k)) {
        return Err(format!(
            "{k} does not apply to this kind (it takes {})",
            used.join(", ")
        ));
    }
    Ok(FaultSpec { at_s, kind })
}

/// Every fault of a run: the scheduled ones and the random ones, by time.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    faults: Vec<FaultSpec>,
    next: usize,
}

impl FaultPlan {
    /// Scheduled faults plus random faults at `rate_per_min` up to
    /// `horizon_s`, drawn from `seed`.
    pub fn new(
        scheduled: &[FaultSpec],
        seed: u64,
        rate_per_min: f64,
        kinds: &[String],
        cncs: usize,
        horizon_s: f64,
    ) -> Self {
        let mut faults = scheduled.to_vec();
        if rate_per_min > 0.0 && !kinds.is_empty() {
            let mut rng = stream(seed, "faults");
            let gap = Exp::new(rate_per_min / 60.0).expect("a positive rate");
            let mut t = 0.0;
            loop {
                t += gap.sample(&mut rng);
                if t > horizon_s {
                    break;
                }
                let kind = kinds[rng.random_range(0..kinds.len())].as_str();
                let cnc = rng.random_range(0..cncs.max(1));
                let kind = match kind {
                    "grbl_alarm" => FaultKind::GrblAlarm { cnc, code: 1 },
                    "disconnect" => FaultKind::Disconnect { cnc, for_s: 2.0 },
                    "garbage" => FaultKind::Garbage { cnc, bytes: 16 },
                    "vacuum_failure" => FaultKind::VacuumFailure { cnc, for_s: 5.0 },
                    "frame_drop" => FaultKind::FrameDrop { for_s: 0.5 },
                    "frame_late" => FaultKind::FrameLate {
                        delay_ms: 200.0,
                        for_s: 1.0,
                    },
                    _ => FaultKind::BeltStop { for_s: 3.0 },
                };
                if cncs == 0
                    && matches!(
                        kind,
                        FaultKind::GrblAlarm { .. }
                            | FaultKind::Disconnect { .. }
                            | FaultKind::Garbage { .. }
                            | FaultKind::VacuumFailure { .. }
                    )
                {
                    continue;
                }
                faults.push(FaultSpec { at_s: t, kind });
            }
        }
        faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        FaultPlan { faults, next: 0 }
    }

    pub fn all(&self) -> &[FaultSpec] {
        &self.faults
    }

    /// Faults that start in (last call, `t_s`], once each, in time order.
    /// Adds a fault injected while running (at or after the last one due).
    pub fn inject(&mut self, mut f: FaultSpec) {
        if let Some(last) = self.next.checked_sub(1).map(|k| self.faults[k].at_s) {
            f.at_s = f.at_s.max(last);
        }
        let at = self.next + self.faults[self.next..].partition_point(|g| g.at_s <= f.at_s);
        self.faults.insert(at, f);
    }

    pub fn due(&mut self, t_s: f64) -> Vec<FaultSpec> {
        let start = self.next;
        while self.next < self.faults.len() && self.faults[self.next].at_s <= t_s {
            self.next += 1;
        }
        self.faults[start..self.next].to_vec()
    }

    fn active(&self, t_s: f64, f: impl Fn(&FaultKind) -> bool) -> Option<&FaultSpec> {
        self.faults
            .iter()
            .find(|s| f(&s.kind) && s.at_s <= t_s && t_s < s.until_s())
    }

    pub fn vacuum_failed(&self, cnc: usize, t_s: f64) -> bool {
        self.active(
            t_s,
            |k| matches!(k, FaultKind::VacuumFailure { cnc: c, .. } if *c == cnc),
        )
        .is_some()
    }

    pub fn frame_dropped(&self, t_s: f64) -> bool {
        self.active(t_s, |k| matches!(k, FaultKind::FrameDrop { .. }))
            .is_some()
    }

    /// How late a frame exposed at `t_s` is delivered, s.
    pub fn frame_delay_s(&self, t_s: f64) -> f64 {
        match self.active(t_s, |k| matches!(k, FaultKind::FrameLate { .. })) {
            Some(FaultSpec {
                kind: FaultKind::FrameLate { delay_ms, .. },
                ..
            }) => delay_ms / 1000.0,
            _ => 0.0,
        }
    }

    /// Belt stops, as (start, duration).
    pub fn belt_stops(&self) -> Vec<(f64, f64)> {
        self.faults
            .iter()
            .filter_map(|s| match s.kind {
                FaultKind::BeltStop { for_s } => Some((s.at_s, for_s)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(e: &str) -> Result<FaultSpec, String> {
        parse_faults(&[e.to_string()], &["1", "2"]).map(|v| v[0].clone())
    }

    #[test]
    fn scheduled_faults_parse_with_their_defaults() {
        assert_eq!(
            parse("12.5 grbl_alarm cnc=2 code=2").unwrap(),
            FaultSpec {
                at_s: 12.5,
                kind: FaultKind::GrblAlarm { cnc: 1, code: 2 }
            }
        );
        assert_eq!(
            parse("3 belt_stop").unwrap().kind,
            FaultKind::BeltStop { for_s: 3.0 }
        );
    }

    #[test]
    fn bad_faults_name_the_entry_and_the_word() {
        let e = parse("x grbl_alarm cnc=1").unwrap_err();
        assert!(
            e.starts_with("faults[0] \"x grbl_alarm cnc=1\": the first word"),
            "{e}"
        );
        assert!(parse("1 grbl_alarm")
            .unwrap_err()
            .contains("needs cnc=<id>"));
        assert!(parse("1 grbl_alarm cnc=9")
            .unwrap_err()
            .contains("cnc=9 is not in cnc_ids (1, 2)"));
        assert!(parse("1 melt cnc=1").unwrap_err().contains("kind \"melt\""));
        assert!(parse("1 belt_stop for_s=-2")
            .unwrap_err()
            .contains("for_s=-2"));
        assert!(parse("1 belt_stop cnc=1")
            .unwrap_err()
            .contains("cnc does not apply"));
    }

    #[test]
    fn random_faults_are_the_same_for_a_seed_and_differ_across_seeds() {
        let kinds: Vec<String> = KINDS.iter().map(|s| s.to_string()).collect();
        let a = FaultPlan::new(&[], 7, 6.0, &kinds, 2, 600.0);
        let b = FaultPlan::new(&[], 7, 6.0, &kinds, 2, 600.0);
        let c = FaultPlan::new(&[], 8, 6.0, &kinds, 2, 600.0);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // About 6 a minute over 10 minutes.
        assert!((30..=90).contains(&a.all().len()), "{}", a.all().len());
    }

    #[test]
    fn an_injected_fault_falls_due_at_once_in_order_and_bad_ones_are_named() {
        let ids = ["1", "2"];
        let mut plan = FaultPlan::new(
            &parse_faults(
                &["5 frame_drop for_s=1".into(), "20 belt_stop".into()],
                &ids,
            )
            .unwrap(),
            1,
            0.0,
            &[],
            2,
            60.0,
        );
        assert_eq!(plan.due(6.0).len(), 1);
        // Stamped before the last one due: it still comes, in order, next.
        plan.inject(parse_injected("grbl_alarm cnc=2 code=3", 4.0, &ids).unwrap());
        plan.inject(parse_injected("vacuum_failure cnc=1 for_s=2", 7.0, &ids).unwrap());
        let due: Vec<&str> = plan.due(7.0).iter().map(|f| f.name()).collect();
        assert_eq!(due, vec!["grbl_alarm", "vacuum_failure"]);
        assert!(plan.vacuum_failed(0, 8.0) && !plan.vacuum_failed(0, 9.5));
        assert_eq!(plan.due(30.0).len(), 1);
        let e = parse_injected("grbl_alarm cnc=9", 1.0, &ids).unwrap_err();
        assert!(
            e.contains("grbl_alarm cnc=9") && e.contains("cnc=9 is not in cnc_ids"),
            "{e}"
        );
    }

    #[test]
    fn due_returns_each_fault_once_and_windows_end() {
        let f = parse_faults(
            &[
                "5 vacuum_failure cnc=1 for_s=2".into(),
                "1 frame_drop for_s=0.5".into(),
            ],
            &["1"],
        )
        .unwrap();
        let mut plan = FaultPlan::new(&f, 1, 0.0, &[], 1, 0.0);
        assert_eq!(plan.due(0.9), vec![]);
        assert_eq!(plan.due(5.0).len(), 2);
        assert_eq!(plan.due(100.0), vec![]);
        assert!(plan.frame_dropped(1.2) && !plan.frame_dropped(1.5));
        assert!(plan.vacuum_failed(0, 6.9) && !plan.vacuum_failed(0, 7.0));
    }
}
