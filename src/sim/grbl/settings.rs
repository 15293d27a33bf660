//! GRBL `$` settings, with grbl 1.1h's defaults.

use std::collections::BTreeMap;

/// grbl 1.1h's default settings ($0..$132).
pub const DEFAULTS: &[(u16, f64)] = &[
    (0, 10.0),
    (1, 25.0),
    (2, 0.0),
    (3, 0.0),
    (4, 0.0),
    (5, 0.0),
    (6, 0.0),
    (10, 1.0),
    (11, 0.010),
    (12, 0.002),
    (13, 0.0),
    (20, 0.0),
    (21, 0.0),
    (22, 0.0),
    (23, 0.0),
    (24, 25.0),
    (25, 500.0),
    (26, 250.0),
    (27, 1.0),
    (30, 1000.0),
    (31, 0.0),
    (32, 0.0),
    (100, 250.0),
    (101, 250.0),
    (102, 250.0),
    (110, 500.0),
    (111, 500.0),
    (112, 500.0),
    (120, 10.0),
    (121, 10.0),
    (122, 10.0),
    (130, 200.0),
    (131, 200.0),
    (132, 200.0),
];

/// Settings whose values are whole numbers (printed without decimals).
const INTEGER: &[u16] = &[0, 1, 2, 3, 4, 5, 6, 10, 13, 20, 21, 22, 23, 26, 30, 31, 32];

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    values: BTreeMap<u16, f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            values: DEFAULTS.iter().copied().collect(),
        }
    }
}

impl Settings {
    pub fn get(&self, n: u16) -> f64 {
        self.values.get(&n).copied().unwrap_or(0.0)
    }

    pub fn flag(&self, n: u16) -> bool {
        self.get(n) != 0.0
    }

    /// Sets `$n`; `None` when `n` is not a setting grbl has (error:3).
    pub fn set(&mut self, n: u16, v: f64) -> Option<()> {
        let slot = self.values.get_mut(&n)?;
        *slot = v;
        Some(())
    }

    /// Maximum rate of axis `a` (0..3), mm/min.
    pub fn max_rate_mm_min(&self, a: usize) -> f64 {
        self.get(110 + a as u16)
    }

    /// Acceleration of axis `a`, mm/s².
    pub fn accel_mm_s2(&self, a: usize) -> f64 {
        self.get(120 + a as u16)
    }

    /// Maximum travel of axis `a`, mm.
    pub fn travel_mm(&self, a: usize) -> f64 {
        self.get(130 + a as u16)
    }

    /// The `$$` listing, one `$n=v` line each, as grbl prints them.
    pub fn listing(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|(n, v)| {
                if INTEGER.contains(n) {
                    format!("${n}={}", *v as i64)
                } else {
                    format!("${n}={v:.3}")
                }
            })
            .collect()
    }
}
