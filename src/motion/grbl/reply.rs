//! What GRBL 1.1 sends, one line at a time, parsed by key: replies (`ok`,
//! `error:N`), alarms, messages and other bracketed feedback, the banner,
//! settings, and status reports whose fields come and go
//! (grbl-protocol.md). Anything else is line noise: it is never taken as a
//! reply, a position or a state.

/// One line from GRBL.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The oldest line in flight was parsed and planned.
    Ok,
    /// The oldest line in flight was refused.
    Error(u8),
    /// An alarm, solicited or not.
    Alarm(u8),
    /// `Grbl 1.1h ['$' for help]`: the board (re)started.
    Banner {
        version: String,
    },
    /// `[MSG:…]`.
    Msg(String),
    /// Other bracketed feedback: `[GC:…]`, `[PRB:…]`, `[VER:…]`, `[OPT:…]`, …
    Feedback {
        tag: String,
        body: String,
    },
    /// `$N=value`, from `$$`.
    Setting {
        number: u16,
        value: f64,
    },
    /// `>…:ok`, a startup block's echo: not a reply.
    StartupEcho(String),
    Status(Status),
    /// Line noise, or a report that does not parse: `why` says what is wrong.
    Garbage {
        line: String,
        why: String,
    },
}

/// A machine state as status reports name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineState {
    Idle,
    Run,
    /// Hold:0 (complete) or Hold:1 (decelerating).
    Hold(u8),
    Jog,
    Alarm,
    Door(u8),
    Check,
    Home,
    Sleep,
}

impl MachineState {
    pub fn parse(s: &str) -> Option<MachineState> {
        let (name, sub) = match s.split_once(':') {
            Some((n, k)) => (n, Some(k.parse::<u8>().ok()?)),
            None => (s, None),
        };
        Some(match (name, sub) {
            ("Idle", None) => MachineState::Idle,
            ("Run", None) => MachineState::Run,
            ("Hold", k) => MachineState::Hold(k.unwrap_or(0)),
            ("Jog", None) => MachineState::Jog,
            ("Alarm", None) => MachineState::Alarm,
            ("Door", k) => MachineState::Door(k.unwrap_or(0)),
            ("Check", None) => MachineState::Check,
            ("Home", None) => MachineState::Home,
            ("Sleep", None) => MachineState::Sleep,
            _ => return None,
        })
    }

    pub fn label(self) -> String {
        match self {
            MachineState::Idle => "Idle".into(),
            MachineState::Run => "Run".into(),
            MachineState::Hold(k) => format!("Hold:{k}"),
            MachineState::Jog => "Jog".into(),
            MachineState::Alarm => "Alarm".into(),
            MachineState::Door(k) => format!("Door:{k}"),
            MachineState::Check => "Check".into(),
            MachineState::Home => "Home".into(),
            MachineState::Sleep => "Sleep".into(),
        }
    }
}

/// A status report; every field but the state is optional, as on the wire.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    pub state: Option<MachineState>,
    pub mpos_mm: Option<[f64; 3]>,
    pub wpos_mm: Option<[f64; 3]>,
    pub wco_mm: Option<[f64; 3]>,
    pub feed_mm_min: Option<f64>,
    pub spindle_rpm: Option<f64>,
    /// `Ov:` feed, rapid, spindle override, percent.
    pub overrides_pct: Option<[f64; 3]>,
    /// `A:` accessories: S (spindle CW), C (CCW), F (flood), M (mist).
    pub accessories: Option<String>,
    /// `Pn:` active input pins.
    pub pins: Option<String>,
    /// `Bf:` free planner blocks, free receive-buffer bytes.
    pub buffer: Option<(u16, u16)>,
    pub line_number: Option<u32>,
}

impl Status {
    /// The machine position: MPos, or WPos + the work offset when only WPos
    /// is reported (`$10=0`) and the offset is known.
    pub fn machine_mm(&self, last_wco_mm: Option<[f64; 3]>) -> Option<[f64; 3]> {
        if let Some(m) = self.mpos_mm {
            return Some(m);
        }
        let (w, o) = (self.wpos_mm?, self.wco_mm.or(last_wco_mm)?);
        Some([w[0] + o[0], w[1] + o[1], w[2] + o[2]])
    }
}

fn numbers<const N: usize>(key: &str, v: &str) -> Result<[f64; N], String> {
    let parts: Vec<&str> = v.split(',').collect();
    if parts.len() != N {
        return Err(format!("{key}: {} values, expected {N}", parts.len()));
    }
    let mut out = [0.0; N];
    for (o, p) in out.iter_mut().zip(parts) {
        *o = p
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{key}: {p:?} is not a number"))?;
    }
    Ok(out)
}

/// Parses `<State|Key:v,v,v|…>`, fields by key; unknown keys are skipped
/// (newer firmware adds some), malformed known ones refuse the report.
pub fn parse_status(line: &str) -> Result<Status, String> {
    let inner = line
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix('>'))
        .ok_or("a status report is <…>")?;
    let mut fields = inner.split('|');
    let state = fields.next().unwrap_or_default();
    let mut s = Status {
        state: Some(MachineState::parse(state).ok_or(format!("unknown state {state:?}"))?),
        ..Status::default()
    };
    for f in fields {
        let (key, v) = f.split_once(':').ok_or(format!("field {f:?} has no key"))?;
        match key {
            "MPos" => s.mpos_mm = Some(numbers::<3>(key, v)?),
            "WPos" => s.wpos_mm = Some(numbers::<3>(key, v)?),
            "WCO" => s.wco_mm = Some(numbers::<3>(key, v)?),
            "FS" => {
                let [f, r] = numbers::<2>(key, v)?;
                s.feed_mm_min = Some(f);
                s.spindle_rpm = Some(r);
            }
            "F" => s.feed_mm_min = Some(numbers::<1>(key, v)?[0]),
            "Ov" => s.overrides_pct = Some(numbers::<3>(key, v)?),
            "Bf" => {
                let [b, r] = numbers::<2>(key, v)?;
                s.buffer = Some((b as u16, r as u16));
            }
            "Ln" => s.line_number = Some(numbers::<1>(key, v)?[0] as u32),
            "A" => s.accessories = Some(v.to_string()),
            "Pn" => s.pins = Some(v.to_string()),
            _ => {}
        }
    }
    if s.mpos_mm.is_none() && s.wpos_mm.is_none() {
        return Err("no MPos or WPos".into());
    }
    Ok(s)
}

fn code(line: &str, prefix: &str) -> Option<u8> {
    line.strip_prefix(prefix)?.parse().ok()
}

/// Parses one line (without its line ending).
pub fn parse(line: &str) -> Reply {
    let garbage = |why: &str| Reply::Garbage {
        line: line.to_string(),
        why: why.to_string(),
    };
    let line_t = line.trim_end_matches(['\r', '\n']);
    if line_t == "ok" {
        return Reply::Ok;
    }
    if line_t.starts_with("error:") {
        return code(line_t, "error:")
            .map_or_else(|| garbage("error: without a code"), Reply::Error);
    }
    if line_t.starts_with("ALARM:") {
        return code(line_t, "ALARM:")
            .map_or_else(|| garbage("ALARM: without a code"), Reply::Alarm);
    }
    if let Some(rest) = line_t.strip_prefix("Grbl ") {
        let version = rest.split_whitespace().next().unwrap_or_default();
        return Reply::Banner {
            version: version.to_string(),
        };
    }
    if line_t.starts_with('<') {
        return match parse_status(line_t) {
            Ok(s) => Reply::Status(s),
            Err(why) => garbage(&why),
        };
    }
    if let Some(body) = line_t.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        let (tag, rest) = body.split_once(':').unwrap_or((body, ""));
        return if tag == "MSG" {
            Reply::Msg(rest.to_string())
        } else {
            Reply::Feedback {
                tag: tag.to_string(),
                body: rest.to_string(),
            }
        };
    }
    if let Some(echo) = line_t.strip_prefix('>') {
        return Reply::StartupEcho(echo.to_string());
    }
    if let Some(rest) = line_t.strip_prefix('$') {
        if let Some((n, v)) = rest.split_once('=') {
            if let (Ok(number), Ok(value)) = (n.parse::<u16>(), v.trim().parse::<f64>()) {
                return Reply::Setting { number, value };
            }
        }
        return garbage("a $ line that is not $N=value");
    }
    if line_t.is_empty() {
        return garbage("empty line");
    }
    garbage("not a GRBL line")
}

/// What an `error:N` means (grbl's table; the codes grbl-protocol.md saw).
pub fn error_text(code: u8) -> &'static str {
    match code {
        1 => "G-code word without a letter",
        2 => "bad number format",
        3 => "invalid $ statement",
        4 => "negative value",
        5 => "homing not enabled",
        8 => "not idle",
        9 => "G-code locked out in alarm or jog",
        10 => "soft limits need homing enabled",
        11 => "line over 80 characters",
        15 => "jog target beyond soft limits",
        20 => "unsupported command",
        21 => "two commands from one modal group",
        22 => "feed rate not set",
        24 => "two commands need axis words",
        25 => "a repeated word",
        26 => "no axis words",
        33 => "invalid target",
        35 => "arc without its arc words",
        37 => "G43.1 on an axis other than Z",
        _ => "see grbl's error table",
    }
}

/// What an `ALARM:N` means.
pub fn alarm_text(code: u8) -> &'static str {
    match code {
        1 => "hard limit triggered; position lost, re-home",
        2 => "soft limit: target beyond travel",
        3 => "reset during motion; position lost, re-home",
        4 => "probe not in the expected state",
        5 => "probe did not contact",
        6 => "homing reset",
        7 => "safety door opened while homing",
        8 => "homing could not pull off the switch",
        9 => "homing did not find the switch",
        _ => "see grbl's alarm table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_alarms_banner_and_feedback() {
        assert_eq!(parse("ok"), Reply::Ok);
        assert_eq!(parse("ok\r"), Reply::Ok);
        assert_eq!(parse("error:22"), Reply::Error(22));
        assert_eq!(parse("ALARM:1"), Reply::Alarm(1));
        assert_eq!(
            parse("Grbl 1.1h ['$' for help]"),
            Reply::Banner {
                version: "1.1h".into()
            }
        );
        assert_eq!(
            parse("[MSG:'$H'|'$X' to unlock]"),
            Reply::Msg("'$H'|'$X' to unlock".into())
        );
        assert_eq!(
            parse("[OPT:V,15,128]"),
            Reply::Feedback {
                tag: "OPT".into(),
                body: "V,15,128".into()
            }
        );
        assert_eq!(
            parse("$132=200.000"),
            Reply::Setting {
                number: 132,
                value: 200.0
            }
        );
        // A startup-block echo is not a reply, and `ok` matches exactly.
        assert_eq!(parse(">G54:ok"), Reply::StartupEcho("G54:ok".into()));
        for noise in ["okay", "error:", "ALARM:x", "\u{fffd}\u{fffd}o", "", "$x"] {
            assert!(matches!(parse(noise), Reply::Garbage { .. }), "{noise:?}");
        }
    }

    #[test]
    fn status_reports_are_parsed_by_key_whatever_fields_come() {
        let Reply::Status(s) = parse("<Idle|MPos:0.000,-1.500,2.000|FS:0,0|WCO:1.000,2.000,3.000>")
        else {
            panic!()
        };
        assert_eq!(s.state, Some(MachineState::Idle));
        assert_eq!(s.mpos_mm, Some([0.0, -1.5, 2.0]));
        assert_eq!(s.wco_mm, Some([1.0, 2.0, 3.0]));
        assert_eq!(s.feed_mm_min, Some(0.0));
        let Reply::Status(s) =
            parse("<Hold:1|WPos:1.000,1.000,1.000|Bf:15,128|FS:500,0|Ov:100,100,100|A:F|Pn:XZ>")
        else {
            panic!()
        };
        assert_eq!(s.state, Some(MachineState::Hold(1)));
        assert_eq!(s.buffer, Some((15, 128)));
        assert_eq!(s.accessories.as_deref(), Some("F"));
        assert_eq!(s.pins.as_deref(), Some("XZ"));
        // WPos alone: the machine position needs the last known offset.
        assert_eq!(s.machine_mm(None), None);
        assert_eq!(s.machine_mm(Some([1.0, 2.0, 3.0])), Some([2.0, 3.0, 4.0]));
        assert!(matches!(
            parse("<Door:2|MPos:0,0,0|Xyz:9>"),
            Reply::Status(_)
        ));
        for bad in [
            "<Idle|MPos:0.000,0.000|FS:0,0>",
            "<Running|MPos:0,0,0>",
            "<Idle|MPos:0,0,nan>",
            "<Idle|FS:0,0>",
            "<Idle|MPos:0,0,0",
        ] {
            assert!(matches!(parse(bad), Reply::Garbage { .. }), "{bad}");
        }
        for st in [
            "Idle", "Run", "Hold:0", "Jog", "Alarm", "Door:1", "Check", "Home", "Sleep",
        ] {
            assert_eq!(MachineState::parse(st).unwrap().label(), st);
        }
    }
}
