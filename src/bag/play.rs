//! The player's pure core: when each message of a bag is due, given the
//! rate, pauses and steps, on a clock passed in (seconds on any monotonic
//! clock). The r2r shell sleeps until `due_s` and publishes.

/// Which messages to play, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayOptions {
    /// Bag seconds per player second (2.0 plays twice as fast).
    pub rate: f64,
    /// Skip this long from the bag's first message, s.
    pub start_offset_s: f64,
    /// Play again from the start when the end is reached.
    pub loop_play: bool,
    /// Topics to play (empty: all).
    pub topics: Vec<String>,
    /// `from:=to` topic renames.
    pub remap: Vec<(String, String)>,
    pub start_paused: bool,
}

impl Default for PlayOptions {
    fn default() -> Self {
        PlayOptions {
            rate: 1.0,
            start_offset_s: 0.0,
            loop_play: false,
            topics: Vec::new(),
            remap: Vec::new(),
            start_paused: false,
        }
    }
}

impl PlayOptions {
    /// Checks the options; errors name the option.
    pub fn check(&self) -> Result<(), String> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(format!(
                "--rate must be a positive number, got {}",
                self.rate
            ));
        }
        if !(self.start_offset_s.is_finite() && self.start_offset_s >= 0.0) {
            return Err(format!(
                "--start-offset-s must be zero or more seconds, got {}",
                self.start_offset_s
            ));
        }
        Ok(())
    }

    /// The name a bag topic is published under.
    pub fn published_name<'a>(&'a self, topic: &'a str) -> &'a str {
        self.remap
            .iter()
            .find(|(from, _)| from == topic)
            .map(|(_, to)| to.as_str())
            .unwrap_or(topic)
    }

    /// Whether a bag topic is played.
    pub fn plays(&self, topic: &str) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|t| t == topic)
    }
}

/// Parses `from:=to`.
pub fn parse_remap(s: &str) -> Result<(String, String), String> {
    match s.split_once(":=") {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
        _ => Err(format!("--remap {s:?}: write from:=to")),
    }
}

/// Bag time ↔ player time.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    rate: f64,
    /// Player time and bag time that coincide.
    anchor: (f64, u64),
    /// The bag time playing stopped at, while paused.
    paused_at: Option<u64>,
    /// The last message's bag time: the clock does not run past it.
    end_ns: u64,
}

impl Timeline {
    /// Bag time `bag_ns` is player time `now_s`.
    pub fn new(rate: f64, now_s: f64, bag_ns: u64, paused: bool) -> Timeline {
        Timeline {
            rate,
            anchor: (now_s, bag_ns),
            paused_at: paused.then_some(bag_ns),
            end_ns: u64::MAX,
        }
    }

    /// The same, with the bag's clock stopping at `end_ns` (its last
    /// message): between that message and the player's exit, /clock would
    /// otherwise run on past the bag.
    pub fn ending_at(self, end_ns: u64) -> Timeline {
        Timeline { end_ns, ..self }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }

    /// The bag time at player time `now_s` (what /clock says).
    pub fn bag_now(&self, now_s: f64) -> u64 {
        if let Some(at) = self.paused_at {
            return at;
        }
        let (t0, b0) = self.anchor;
        let d_ns = ((now_s - t0) * self.rate * 1e9).round();
        let at = if d_ns >= 0.0 {
            b0.saturating_add(d_ns as u64)
        } else {
            b0.saturating_sub((-d_ns) as u64)
        };
        at.min(self.end_ns)
    }

    /// When a message stamped `bag_ns` is due (None while paused).
    pub fn due_s(&self, bag_ns: u64) -> Option<f64> {
        if self.paused_at.is_some() {
            return None;
        }
        let (t0, b0) = self.anchor;
        Some(t0 + (bag_ns as f64 - b0 as f64) / 1e9 / self.rate)
    }

    /// Pauses; false if it was paused already.
    pub fn pause(&mut self, now_s: f64) -> bool {
        if self.paused_at.is_some() {
            return false;
        }
        self.paused_at = Some(self.bag_now(now_s));
        true
    }

    /// Resumes from where it paused; false if it was not paused.
    pub fn resume(&mut self, now_s: f64) -> bool {
        match self.paused_at.take() {
            Some(at) => {
                self.anchor = (now_s, at);
                true
            }
            None => false,
        }
    }

    /// A message stamped `bag_ns` was played by a step: the pause moves to it.
    pub fn stepped(&mut self, bag_ns: u64) {
        if self.paused_at.is_some() {
            self.paused_at = Some(bag_ns);
        }
    }

    /// Restarts at `bag_ns` (a loop back to the start).
    pub fn restart(&mut self, now_s: f64, bag_ns: u64) {
        if self.paused_at.is_some() {
            self.paused_at = Some(bag_ns);
        } else {
            self.anchor = (now_s, bag_ns);
        }
    }

    /// A new rate from `now_s` on.
    pub fn set_rate(&mut self, now_s: f64, rate: f64) {
        let at = self.bag_now(now_s);
        self.anchor = (now_s, at);
        self.rate = rate;
    }
}

/// A request to the player (its services).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Toggle,
    /// Play the next message now (only while paused).
    Next,
    IsPaused,
}

/// What the player does about a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Reply {
        success: bool,
        message: String,
    },
    /// Publish the next message now; the pause stays, moved to it.
    PlayNext,
}

impl Timeline {
    /// Carries out a command at `now_s`.
    pub fn command(&mut self, now_s: f64, c: Command) -> Answer {
        let reply = |success: bool, message: &str| Answer::Reply {
            success,
            message: message.to_string(),
        };
        match c {
            Command::Pause => reply(self.pause(now_s), "paused"),
            Command::Resume => reply(self.resume(now_s), "playing"),
            Command::Toggle => {
                if !self.pause(now_s) {
                    self.resume(now_s);
                }
                reply(
                    true,
                    if self.is_paused() {
                        "paused"
                    } else {
                        "playing"
                    },
                )
            }
            Command::IsPaused => reply(self.is_paused(), ""),
            Command::Next if self.is_paused() => Answer::PlayNext,
            Command::Next => reply(false, "play_next works only while paused"),
        }
    }
}

/// The indexes of the messages to play, in order: the chosen topics, from
/// the start offset on. `times` are the messages' log times, `topics` their
/// topic names.
pub fn playlist(times: &[u64], topics: &[&str], opts: &PlayOptions) -> Vec<usize> {
    let Some(&first) = times.iter().min() else {
        return Vec::new();
    };
    let from = first.saturating_add((opts.start_offset_s * 1e9).round() as u64);
    (0..times.len())
        .filter(|&i| times[i] >= from && opts.plays(topics[i]))
        .collect()
}
