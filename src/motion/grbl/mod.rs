//! The GRBL 1.1 client: `reply` parses what the board sends, `stream`
//! counts characters against its receive buffer, `client` owns the port.

pub mod client;
pub mod reply;
pub mod stream;

/// GRBL 1.1's dwell step (`DWELL_TIME_STEP` in its config.h), s.
pub const DWELL_STEP_S: f64 = 0.05;

/// The `G4` line for a dwell of `seconds`, and how long GRBL 1.1 dwells
/// for it, s: the P word goes to the millisecond, and grbl's `delay_sec`
/// runs whole steps, `ceil(20 × P)` of them in the AVR's 32-bit float, so
/// `P0.060` dwells 0.1 s and `P0.000` not at all.
pub fn dwell(seconds: f64) -> (String, f64) {
    let p_ms = (seconds.max(0.0) * 1000.0).round();
    let steps = (20.0f32 * (p_ms / 1000.0) as f32).ceil();
    (
        format!("G4 P{:.3}", p_ms / 1000.0),
        steps as f64 * DWELL_STEP_S,
    )
}

#[cfg(test)]
mod tests {
    use super::dwell;

    #[test]
    fn a_dwell_takes_whole_50_ms_steps_of_what_the_line_says() {
        for (asked_s, line, dwelt_s) in [
            (0.0, "G4 P0.000", 0.0),
            (0.0004, "G4 P0.000", 0.0),
            (0.001, "G4 P0.001", 0.05),
            (0.05, "G4 P0.050", 0.05),
            (0.0504, "G4 P0.050", 0.05),
            (0.051, "G4 P0.051", 0.1),
            (0.06, "G4 P0.060", 0.1),
            (0.3, "G4 P0.300", 0.3),
            (1.234, "G4 P1.234", 1.25),
        ] {
            let (text, s) = dwell(asked_s);
            assert_eq!(text, line, "{asked_s}");
            assert!((s - dwelt_s).abs() < 1e-12, "{asked_s}: {s} s");
        }
    }
}
