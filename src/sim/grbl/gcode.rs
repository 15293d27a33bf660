//! G-code lines as grbl reads them: comments and spaces dropped, upper-cased,
//! split into words, with grbl's error codes for what is wrong with a line
//! on its own. What depends on the machine's modal state (a feed rate not
//! yet set, say) is checked by the machine.

use std::collections::BTreeMap;

/// grbl error codes used here (grbl-protocol.md's table).
pub mod err {
    pub const BAD_NUMBER_FORMAT: u8 = 2;
    pub const INVALID_STATEMENT: u8 = 3;
    pub const NEGATIVE_VALUE: u8 = 4;
    pub const HOMING_DISABLED: u8 = 5;
    pub const IDLE_ERROR: u8 = 8;
    pub const SYSTEM_GC_LOCK: u8 = 9;
    pub const OVERFLOW: u8 = 11;
    pub const TRAVEL_EXCEEDED: u8 = 15;
    pub const UNSUPPORTED_COMMAND: u8 = 20;
    pub const MODAL_GROUP_VIOLATION: u8 = 21;
    pub const UNDEFINED_FEED_RATE: u8 = 22;
    pub const WORD_REPEATED: u8 = 25;
    pub const NO_AXIS_WORDS: u8 = 26;
    pub const INVALID_TARGET: u8 = 33;
    pub const ARC_RADIUS_ERROR: u8 = 34;
    pub const NO_OFFSETS_IN_PLANE: u8 = 35;
    pub const AXIS_COMMAND_CONFLICT: u8 = 37;
}

/// grbl's limit on significant characters in a line.
pub const MAX_LINE: usize = 80;

/// A line with comments and spaces removed, upper-cased.
pub fn significant(line: &str) -> String {
    let mut out = String::new();
    let mut in_paren = false;
    for c in line.chars() {
        match c {
            '(' => in_paren = true,
            ')' => in_paren = false,
            ';' if !in_paren => break,
            _ if in_paren || c.is_whitespace() => {}
            _ => out.push(c.to_ascii_uppercase()),
        }
    }
    out
}

/// The words of one line. G and M codes are kept as tenths (G38.2 = 382,
/// G43.1 = 431) in the order given; every other letter at most once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Words {
    pub g: Vec<u16>,
    pub m: Vec<u16>,
    pub values: BTreeMap<char, f64>,
}

impl Words {
    pub fn get(&self, c: char) -> Option<f64> {
        self.values.get(&c).copied()
    }
    pub fn axes(&self) -> [Option<f64>; 3] {
        [self.get('X'), self.get('Y'), self.get('Z')]
    }
    pub fn has_axis(&self) -> bool {
        self.axes().iter().any(Option::is_some)
    }
}

fn number(s: &[u8], i: &mut usize) -> Option<f64> {
    let start = *i;
    if *i < s.len() && (s[*i] == b'-' || s[*i] == b'+') {
        *i += 1;
    }
    let digits_from = *i;
    while *i < s.len() && (s[*i].is_ascii_digit() || s[*i] == b'.') {
        *i += 1;
    }
    if *i == digits_from {
        *i = start;
        return None;
    }
    std::str::from_utf8(&s[start..*i]).ok()?.parse().ok()
}

/// G modal groups (grbl's gcode.h); non-modal commands share group 0.
fn g_group(code: u16) -> Option<u8> {
    Some(match code {
        40 | 100 | 280 | 281 | 300 | 301 | 530 | 920 | 921 => 0,
        0 | 10 | 20 | 30 | 382 | 383 | 384 | 385 | 800 => 1,
        170 | 180 | 190 => 2,
        900 | 910 => 3,
        911 => 4,
        930 | 940 => 5,
        200 | 210 => 6,
        400 => 7,
        431 | 490 => 8,
        540 | 550 | 560 | 570 | 580 | 590 => 12,
        610 => 13,
        _ => return None,
    })
}

fn m_group(code: u16) -> Option<u8> {
    Some(match code {
        0 | 10 | 20 | 300 => 4,
        30 | 40 | 50 => 7,
        80 | 90 => 8,
        _ => return None,
    })
}

/// Splits a significant line into words, or the grbl error code for it.
pub fn parse(line: &str) -> Result<Words, u8> {
    if line.len() > MAX_LINE {
        return Err(err::OVERFLOW);
    }
    let s = line.as_bytes();
    let mut w = Words::default();
    let (mut g_groups, mut m_groups) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < s.len() {
        let letter = s[i] as char;
        if !letter.is_ascii_uppercase() {
            return Err(err::BAD_NUMBER_FORMAT);
        }
        i += 1;
        let v = number(s, &mut i).ok_or(err::BAD_NUMBER_FORMAT)?;
        match letter {
            'G' | 'M' => {
                let code = (v * 10.0).round();
                if code < 0.0 {
                    return Err(err::NEGATIVE_VALUE);
                }
                let code = code as u16;
                let (group, seen) = if letter == 'G' {
                    (g_group(code), &mut g_groups)
                } else {
                    (m_group(code), &mut m_groups)
                };
                let group = group.ok_or(err::UNSUPPORTED_COMMAND)?;
                if seen.contains(&group) {
                    return Err(err::MODAL_GROUP_VIOLATION);
                }
                seen.push(group);
                if letter == 'G' {
                    w.g.push(code)
                } else {
                    w.m.push(code)
                }
            }
            'F' | 'I' | 'J' | 'K' | 'L' | 'N' | 'P' | 'R' | 'S' | 'T' | 'X' | 'Y' | 'Z' => {
                if matches!(letter, 'F' | 'N' | 'P' | 'S' | 'T' | 'L') && v < 0.0 {
                    return Err(err::NEGATIVE_VALUE);
                }
                if w.values.insert(letter, v).is_some() {
                    return Err(err::WORD_REPEATED);
                }
            }
            // A, B, C and the rest: no such axis or word in this build.
            _ => return Err(err::UNSUPPORTED_COMMAND),
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_spaces_do_not_count() {
        assert_eq!(significant("g0 x1.5 (go) y2 ; done"), "G0X1.5Y2");
    }

    #[test]
    fn words_parse_with_tenths_for_g_codes() {
        let w = parse("G43.1Z-2.5F100").unwrap();
        assert_eq!(w.g, vec![431]);
        assert_eq!((w.get('Z'), w.get('F')), (Some(-2.5), Some(100.0)));
    }
}
