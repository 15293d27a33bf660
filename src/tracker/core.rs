//! The tracker's pure core: detections of one frame in (belt metres,
//! stamped with the exposure), tracks out. Time comes only from the
//! stamps, so the same detections give the same tracks whatever the wall
//! clock.
//!
//! - Each track is a constant-velocity Kalman filter; a new track starts
//!   at the belt's speed, which is shared state estimated from every
//!   track's motion ([`SpeedEstimator`]).
//! - Association: a Mahalanobis gate on the predicted position, then the
//!   optimal assignment ([`assign`]).
//! - Lifecycle: tentative until `confirm_hits` detections, then confirmed;
//!   a tentative track that misses `tentative_misses` frames in view is
//!   dropped; a confirmed one unseen for `lost_after_s` while the camera
//!   should see it is lost.
//! - Out of the camera's view a track is dead reckoned at the belt's speed,
//!   its uncertainty growing, until it passes the belt's end.

use super::assign::assign;
use super::kalman::Kalman;
use super::speed::{SpeedEstimate, SpeedEstimator};
use nalgebra::{Matrix2, Vector2};

#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// The camera's view along the belt, m: a track predicted in it is expected to be seen.
    pub view_x_m: (f64, f64),
    /// A track past this x (or before 0) has left the belt.
    pub belt_length_m: f64,
    pub belt_width_m: f64,
    pub lanes: u32,
    /// Squared Mahalanobis gate (2 degrees of freedom; 13.8 is 99.9 %).
    pub gate_chi2: f64,
    /// And no further than this from the prediction, m (a track whose
    /// uncertainty has grown must not reach across the belt).
    pub gate_distance_m: f64,
    /// Detection position noise, standard deviation, m.
    pub measurement_stddev_m: f64,
    /// White-noise acceleration of a track, standard deviation, m/s².
    pub accel_stddev_mps2: f64,
    pub confirm_hits: u32,
    pub tentative_misses: u32,
    pub lost_after_s: f64,
    /// Before the belt's speed is known, m/s.
    pub initial_speed_mps: f64,
    /// Speed samples: each track's measured move over about this long, s.
    pub speed_baseline_s: f64,
    pub speed_window_s: f64,
    /// While the speed is steady, the estimate uses this long a window, s.
    pub speed_steady_window_s: f64,
    pub stop_mps: f64,
    /// A new track closer than this to a live one is the same object seen again, m.
    pub duplicate_distance_m: f64,
    /// An encoder reading takes precedence over the vision estimate for
    /// this long after its stamp, s; then vision takes over again.
    pub encoder_timeout_s: f64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            view_x_m: (0.2, 1.48),
            belt_length_m: 4.0,
            belt_width_m: 0.6,
            lanes: 4,
            gate_chi2: 13.8,
            gate_distance_m: 0.03,
            measurement_stddev_m: 0.0005,
            accel_stddev_mps2: 0.5,
            confirm_hits: 3,
            tentative_misses: 3,
            lost_after_s: 10.0,
            initial_speed_mps: 0.2,
            speed_baseline_s: 0.4,
            speed_window_s: 0.2,
            speed_steady_window_s: 1.0,
            stop_mps: 0.005,
            duplicate_distance_m: 0.02,
            encoder_timeout_s: 0.5,
        }
    }
}

/// One detection, as the tracker needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub x_m: f64,
    pub y_m: f64,
    pub class_id: String,
    pub confidence: f64,
    /// Footprint along and across the belt, m, and yaw, rad.
    pub size_m: [f64; 2],
    pub yaw_rad: f64,
    /// The detection's ids: a track keeps those of its first detection.
    pub object_id: [u8; 16],
    pub vision_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackState {
    Tentative,
    Confirmed,
    /// Expected in view but not seen for `lost_after_s`.
    Lost,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub object_id: [u8; 16],
    pub vision_id: String,
    pub class_id: String,
    pub state: TrackState,
    pub kalman: Kalman,
    pub first_seen_s: f64,
    pub last_seen_s: f64,
    pub hits: u32,
    /// Frames in view without a detection, in a row.
    pub misses: u32,
    /// Matched in the latest frame.
    pub visible: bool,
    pub confidence: f64,
    /// Footprint along and across the belt, m, and yaw, rad (latest seen).
    pub size_m: [f64; 2],
    pub yaw_rad: f64,
    /// Recent measured (t, x), for speed samples.
    recent: std::collections::VecDeque<(f64, f64)>,
}

impl Track {
    pub fn position(&self) -> Vector2<f64> {
        self.kalman.position()
    }
}

/// What one frame changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Tracks confirmed in this frame (to register with the state manager).
    pub confirmed: Vec<[u8; 16]>,
    /// Confirmed tracks expected in view but unseen for `lost_after_s`.
    pub lost: Vec<[u8; 16]>,
    /// Tracks that left the belt (or the view, if never confirmed).
    pub removed: Vec<[u8; 16]>,
    /// Which track took each observation (by index), new tracks included;
    /// observations folded into a live track as duplicates are absent.
    pub assigned: Vec<(usize, [u8; 16])>,
    pub speed: Option<SpeedEstimate>,
}

/// Where the belt speed in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeedSource {
    /// Not measured yet: `initial_speed_mps`.
    Assumed,
    Vision,
    Encoder,
}

/// The belt speed the tracker is using now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeltSpeed {
    pub speed_mps: f64,
    pub stddev_mps: f64,
    pub source: SpeedSource,
    pub stopped: bool,
    pub reversed: bool,
}

pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    speed: SpeedEstimator,
    belt_speed_mps: f64,
    /// Variance of the belt speed estimate, (m/s)².
    belt_speed_var: f64,
    source: SpeedSource,
    /// The latest encoder reading: (stamp, speed, stddev).
    encoder: Option<(f64, f64, f64)>,
    last_s: Option<f64>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Tracker {
            speed: SpeedEstimator::new(cfg.speed_window_s, cfg.speed_steady_window_s, cfg.stop_mps),
            belt_speed_mps: cfg.initial_speed_mps,
            belt_speed_var: (0.1 * cfg.initial_speed_mps).powi(2),
            cfg,
            tracks: Vec::new(),
            source: SpeedSource::Assumed,
            encoder: None,
            last_s: None,
        }
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    /// A belt encoder reading stamped `t_s`. While fresh (see
    /// `encoder_timeout_s`) it is the belt speed, whatever vision says.
    pub fn encoder(&mut self, t_s: f64, speed_mps: f64, stddev_mps: f64) {
        if !(speed_mps.is_finite() && stddev_mps.is_finite()) {
            return;
        }
        if self.encoder.is_some_and(|(u, _, _)| u > t_s) {
            return;
        }
        self.encoder = Some((t_s, speed_mps, stddev_mps.abs()));
        self.use_encoder(t_s);
    }

    /// Switches to the encoder's speed if its reading is fresh at `t_s`.
    fn use_encoder(&mut self, t_s: f64) -> bool {
        match self.encoder {
            Some((u, v, sd)) if (t_s - u).abs() <= self.cfg.encoder_timeout_s => {
                self.belt_speed_mps = v;
                self.belt_speed_var = sd.powi(2).max(1e-10);
                self.source = SpeedSource::Encoder;
                true
            }
            _ => false,
        }
    }

    /// The belt speed in use.
    pub fn belt_speed(&self) -> BeltSpeed {
        let stop = self.cfg.stop_mps;
        BeltSpeed {
            speed_mps: self.belt_speed_mps,
            stddev_mps: self.belt_speed_var.sqrt(),
            source: self.source,
            stopped: self.belt_speed_mps.abs() < stop,
            reversed: self.belt_speed_mps <= -stop,
        }
    }

    /// The time the tracks are predicted to (the latest frame's stamp).
    pub fn now_s(&self) -> Option<f64> {
        self.last_s
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn belt_speed_mps(&self) -> f64 {
        self.belt_speed_mps
    }

    pub fn lane_of(&self, y_m: f64) -> u32 {
        crate::detector::core::lane_of(y_m, self.cfg.belt_width_m, self.cfg.lanes)
    }

    fn r(&self) -> Matrix2<f64> {
        Matrix2::identity() * self.cfg.measurement_stddev_m.powi(2)
    }

    /// Moves every track to `t_s` without a frame (e.g. for a prediction
    /// published between frames); out-of-view tracks move at the belt's speed.
    fn predict_to(&mut self, t_s: f64) {
        let dt = match self.last_s {
            Some(last) if t_s > last => t_s - last,
            _ => 0.0,
        };
        self.last_s = Some(self.last_s.map_or(t_s, |l| l.max(t_s)));
        if dt <= 0.0 {
            return;
        }
        let q = self.cfg.accel_stddev_mps2.powi(2);
        let belt = self.belt_speed_mps;
        let belt_var = self.belt_speed_var;
        let view = self.cfg.view_x_m;
        for t in &mut self.tracks {
            let x = t.kalman.position().x;
            // Unseen (out of view, hidden, or missed): it rides the belt.
            if !t.visible || x < view.0 || x > view.1 {
                // Dead reckoning: riding the belt, as uncertain as its speed.
                t.kalman.state[2] = belt;
                t.kalman.state[3] = 0.0;
                for i in 0..4 {
                    for j in 2..4 {
                        t.kalman.cov[(i, j)] = 0.0;
                        t.kalman.cov[(j, i)] = 0.0;
                    }
                }
                t.kalman.cov[(2, 2)] = belt_var;
                t.kalman.cov[(3, 3)] = 1e-8;
                t.kalman.predict(dt, 0.0);
            } else {
                t.kalman.predict(dt, q);
            }
        }
    }

    /// One frame exposed at `t_s` with its detections.
    pub fn step(&mut self, t_s: f64, observations: &[Observation]) -> Changes {
        let mut changes = Changes::default();
        self.predict_to(t_s);
        let r = self.r();
        let gate = self.cfg.gate_chi2;
        // Gated pairs; class must agree. Observations sorted by x, so each
        // track looks only at those within gate_distance_m along the belt.
        let mut by_x: Vec<(f64, usize)> = observations
            .iter()
            .enumerate()
            .map(|(j, o)| (o.x_m, j))
            .collect();
        by_x.sort_by(|a, b| a.0.total_cmp(&b.0));
        let reach = self.cfg.gate_distance_m;
        let mut pairs = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            let x = t.kalman.position().x;
            let from = by_x.partition_point(|(ox, _)| *ox < x - reach);
            for &(ox, j) in &by_x[from..] {
                if ox > x + reach {
                    break;
                }
                let o = &observations[j];
                if o.class_id != t.class_id {
                    continue;
                }
                let z = Vector2::new(o.x_m, o.y_m);
                if (z - t.kalman.position()).norm() > self.cfg.gate_distance_m {
                    continue;
                }
                let d2 = t.kalman.mahalanobis2(z, &r);
                if d2 <= gate {
                    pairs.push((i, j, d2));
                }
            }
        }
        pairs.sort_by_key(|&(i, j, _)| (i, j));
        let matches = assign(self.tracks.len(), observations.len(), &pairs, gate);
        let mut matched_track = vec![false; self.tracks.len()];
        let mut matched_obs = vec![false; observations.len()];
        for &(i, j) in &matches {
            matched_track[i] = true;
            matched_obs[j] = true;
            let o = &observations[j];
            let t = &mut self.tracks[i];
            t.kalman.update(Vector2::new(o.x_m, o.y_m), &r);
            changes.assigned.push((j, t.object_id));
            // A speed sample: the measured move over the baseline.
            t.recent.push_back((t_s, o.x_m));
            while t.recent.len() > 2
                && t.recent
                    .get(1)
                    .is_some_and(|(u, _)| t_s - u >= self.cfg.speed_baseline_s)
            {
                t.recent.pop_front();
            }
            if let Some(&(u, x)) = t.recent.front() {
                if t_s - u >= self.cfg.speed_baseline_s * 0.75 {
                    self.speed.add(t_s, (o.x_m - x) / (t_s - u));
                }
            }
            t.hits += 1;
            t.misses = 0;
            t.visible = true;
            t.last_seen_s = t_s;
            t.confidence = o.confidence;
            t.size_m = o.size_m;
            t.yaw_rad = o.yaw_rad;
            if t.state == TrackState::Tentative && t.hits >= self.cfg.confirm_hits {
                t.state = TrackState::Confirmed;
                changes.confirmed.push(t.object_id);
            }
            if t.state == TrackState::Lost {
                t.state = TrackState::Confirmed;
            }
        }
        changes.speed = self.speed.estimate(t_s);
        if !self.use_encoder(t_s) {
            if let Some(s) = changes.speed {
                self.belt_speed_mps = s.speed_mps;
                self.belt_speed_var = s.stddev_mps.powi(2).max(1e-10);
                self.source = SpeedSource::Vision;
            }
        }
        // Unmatched tracks: a miss if they should have been seen.
        for (i, t) in self.tracks.iter_mut().enumerate() {
            if matched_track[i] {
                continue;
            }
            t.visible = false;
            let x = t.kalman.position().x;
            let expected = x >= self.cfg.view_x_m.0 && x <= self.cfg.view_x_m.1;
            if expected {
                t.misses += 1;
                if t.state == TrackState::Confirmed && t_s - t.last_seen_s >= self.cfg.lost_after_s
                {
                    t.state = TrackState::Lost;
                    changes.lost.push(t.object_id);
                }
            }
        }
        // New tracks from unmatched detections, unless a live track is right there.
        for (j, o) in observations.iter().enumerate() {
            if matched_obs[j] {
                continue;
            }
            let p = Vector2::new(o.x_m, o.y_m);
            if self
                .tracks
                .iter()
                .any(|t| (t.kalman.position() - p).norm() < self.cfg.duplicate_distance_m)
            {
                continue;
            }
            changes.assigned.push((j, o.object_id));
            let m2 = self.cfg.measurement_stddev_m.powi(2);
            let speed_var = (0.2 * self.belt_speed_mps.abs()).max(0.02).powi(2);
            self.tracks.push(Track {
                object_id: o.object_id,
                vision_id: o.vision_id.clone(),
                class_id: o.class_id.clone(),
                state: if self.cfg.confirm_hits <= 1 {
                    changes.confirmed.push(o.object_id);
                    TrackState::Confirmed
                } else {
                    TrackState::Tentative
                },
                kalman: Kalman::new(p, Vector2::new(self.belt_speed_mps, 0.0), m2, speed_var),
                first_seen_s: t_s,
                last_seen_s: t_s,
                hits: 1,
                misses: 0,
                visible: true,
                confidence: o.confidence,
                size_m: o.size_m,
                yaw_rad: o.yaw_rad,
                recent: [(t_s, o.x_m)].into_iter().collect(),
            });
        }
        // Removals: off the belt; tentative ones that kept missing or left the view.
        let cfg = &self.cfg;
        let mut kept = Vec::with_capacity(self.tracks.len());
        for t in self.tracks.drain(..) {
            let x = t.kalman.position().x;
            let off_belt = x > cfg.belt_length_m || x < 0.0;
            let failed_tentative = t.state == TrackState::Tentative
                && (t.misses >= cfg.tentative_misses || x > cfg.view_x_m.1);
            if off_belt || failed_tentative {
                changes.removed.push(t.object_id);
            } else {
                kept.push(t);
            }
        }
        self.tracks = kept;
        changes.assigned.sort_unstable();
        changes
    }
}
