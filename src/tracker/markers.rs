//! What the tracker shows in rviz, as one visualization_msgs/MarkerArray in
//! the `belt` frame: each track's box coloured by its object's state (from
//! objects/events), its vision id, its velocity arrow, the predicted pick
//! point of its assignment, and the CNC reach windows. The array starts
//! with DELETEALL, so tracks that ended vanish.

use super::core::{Track, TrackState};
use crate::msgs::msg::ObjectState;
use r2r::builtin_interfaces::msg::Time;
use r2r::std_msgs::msg::ColorRGBA;
use r2r::visualization_msgs::msg::{Marker, MarkerArray};
use std::collections::HashMap;

pub const NS_OBJECTS: &str = "objects";
pub const NS_IDS: &str = "ids";
pub const NS_VELOCITY: &str = "velocity";
pub const NS_PICK_POINTS: &str = "pick_points";
pub const NS_CNC_WINDOWS: &str = "cnc_windows";

/// A CNC reach window along the belt.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub cnc_id: String,
    pub x_min_m: f64,
    pub x_max_m: f64,
}

/// What the markers are drawn from, besides the tracks.
#[derive(Debug, Clone, Default)]
pub struct Scene {
    pub belt_width_m: f64,
    pub windows: Vec<Window>,
    /// The latest state of each object (ObjectState ids), from objects/events.
    pub states: HashMap<[u8; 16], u8>,
    /// Predicted pick points (belt frame, m), from assignments.
    pub pick_points: HashMap<[u8; 16], [f64; 3]>,
}

impl Scene {
    /// An object's state, heard on objects/events: kept while the object
    /// has a track to draw. Events keep coming after a track has left the
    /// belt's end (a pick's BINNED, an expiry); kept, each would stay for
    /// good, and a cell that runs for months would grow by every object.
    pub fn heard_state(&mut self, tracks: &[Track], id: [u8; 16], state: u8) {
        if tracked(tracks, &id) {
            self.states.insert(id, state);
        }
    }

    /// An assignment's predicted pick point (belt frame, m): kept, as a
    /// state is, while the object has a track.
    pub fn heard_pick_point(&mut self, tracks: &[Track], id: [u8; 16], point_m: [f64; 3]) {
        if tracked(tracks, &id) {
            self.pick_points.insert(id, point_m);
        }
    }

    /// Tracks removed: what was kept for them goes too.
    pub fn forget(&mut self, removed: &[[u8; 16]]) {
        for id in removed {
            self.states.remove(id);
            self.pick_points.remove(id);
        }
    }
}

fn tracked(tracks: &[Track], id: &[u8; 16]) -> bool {
    tracks.iter().any(|t| &t.object_id == id)
}

fn rgba(r: f32, g: f32, b: f32, a: f32) -> ColorRGBA {
    ColorRGBA { r, g, b, a }
}

/// A track's colour: its object's state once the state manager has one,
/// else its track state.
pub fn color_of(track: &Track, state: Option<u8>) -> ColorRGBA {
    const ASSIGNED: u8 = ObjectState::ASSIGNED as u8;
    const PICKING: u8 = ObjectState::PICKING as u8;
    const PICKED: u8 = ObjectState::PICKED as u8;
    const DROPPED: u8 = ObjectState::DROPPED as u8;
    const MISSED: u8 = ObjectState::MISSED as u8;
    const BYPASSED: u8 = ObjectState::BYPASSED as u8;
    match (track.state, state) {
        (TrackState::Lost, _) => rgba(1.0, 0.0, 1.0, 0.9),
        (_, Some(ASSIGNED)) => rgba(0.2, 0.4, 1.0, 0.9),
        (_, Some(PICKING)) => rgba(1.0, 0.6, 0.0, 0.9),
        (_, Some(PICKED)) => rgba(0.0, 0.9, 0.2, 0.9),
        (_, Some(DROPPED)) | (_, Some(MISSED)) => rgba(1.0, 0.0, 0.0, 0.9),
        (_, Some(BYPASSED)) => rgba(0.5, 0.5, 0.5, 0.9),
        (TrackState::Tentative, _) => rgba(0.7, 0.7, 0.7, 0.4),
        // Confirmed, DETECTED or not yet known to the state manager.
        _ => rgba(1.0, 1.0, 0.2, 0.9),
    }
}

/// A stable marker id for an object (rviz keys markers by ns and id).
pub fn marker_id(object_id: &[u8; 16]) -> i32 {
    (u32::from_le_bytes([object_id[0], object_id[1], object_id[2], object_id[3]]) & 0x7fff_ffff)
        as i32
}

fn base(stamp: &Time, ns: &str, id: i32, kind: i32) -> Marker {
    let mut m = Marker::default();
    m.header.stamp = stamp.clone();
    m.header.frame_id = "belt".into();
    m.ns = ns.into();
    m.id = id;
    m.type_ = kind;
    m.action = Marker::ADD as i32;
    m.pose.orientation.w = 1.0;
    m
}

/// The markers for `tracks` at `stamp`.
pub fn markers(stamp: &Time, tracks: &[Track], scene: &Scene) -> MarkerArray {
    let mut out = Vec::with_capacity(4 * tracks.len() + scene.windows.len() + 1);
    let mut clear = Marker::default();
    clear.header.frame_id = "belt".into();
    clear.action = Marker::DELETEALL as i32;
    out.push(clear);
    for (i, w) in scene.windows.iter().enumerate() {
        let mut m = base(stamp, NS_CNC_WINDOWS, i as i32, Marker::CUBE as i32);
        m.pose.position.x = (w.x_min_m + w.x_max_m) / 2.0;
        m.pose.position.y = scene.belt_width_m / 2.0;
        m.scale.x = w.x_max_m - w.x_min_m;
        m.scale.y = scene.belt_width_m;
        m.scale.z = 0.002;
        m.color = rgba(0.3, 0.8, 1.0, 0.15);
        out.push(m);
        let mut t = base(
            stamp,
            NS_CNC_WINDOWS,
            1000 + i as i32,
            Marker::TEXT_VIEW_FACING as i32,
        );
        t.pose.position.x = w.x_min_m;
        t.pose.position.y = -0.05;
        t.scale.z = 0.04;
        t.color = rgba(0.3, 0.8, 1.0, 1.0);
        t.text = format!("cnc_{}", w.cnc_id);
        out.push(t);
    }
    for track in tracks {
        let id = marker_id(&track.object_id);
        let p = track.position();
        let v = track.kalman.velocity();
        let state = scene.states.get(&track.object_id).copied();
        let mut b = base(stamp, NS_OBJECTS, id, Marker::CUBE as i32);
        b.pose.position.x = p.x;
        b.pose.position.y = p.y;
        b.pose.position.z = 0.01;
        let half = track.yaw_rad / 2.0;
        b.pose.orientation.z = half.sin();
        b.pose.orientation.w = half.cos();
        b.scale.x = track.size_m[0].max(0.005);
        b.scale.y = track.size_m[1].max(0.005);
        b.scale.z = 0.02;
        b.color = color_of(track, state);
        out.push(b);
        let mut t = base(stamp, NS_IDS, id, Marker::TEXT_VIEW_FACING as i32);
        t.pose.position.x = p.x;
        t.pose.position.y = p.y;
        t.pose.position.z = 0.06;
        t.scale.z = 0.02;
        t.color = rgba(1.0, 1.0, 1.0, 1.0);
        t.text = track.vision_id.clone();
        out.push(t);
        let mut a = base(stamp, NS_VELOCITY, id, Marker::ARROW as i32);
        a.scale.x = 0.005;
        a.scale.y = 0.01;
        a.scale.z = 0.01;
        a.color = rgba(0.0, 1.0, 1.0, 0.9);
        // One second of travel.
        let from = r2r::geometry_msgs::msg::Point {
            x: p.x,
            y: p.y,
            z: 0.03,
        };
        let to = r2r::geometry_msgs::msg::Point {
            x: p.x + v.x,
            y: p.y + v.y,
            z: 0.03,
        };
        a.points = vec![from, to];
        out.push(a);
        if let Some(q) = scene.pick_points.get(&track.object_id) {
            let mut s = base(stamp, NS_PICK_POINTS, id, Marker::SPHERE as i32);
            s.pose.position.x = q[0];
            s.pose.position.y = q[1];
            s.pose.position.z = q[2];
            s.scale.x = 0.02;
            s.scale.y = 0.02;
            s.scale.z = 0.02;
            s.color = rgba(1.0, 0.2, 0.8, 0.9);
            out.push(s);
        }
    }
    MarkerArray { markers: out }
}
