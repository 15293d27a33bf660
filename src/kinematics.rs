//! Geometry shared by the simulator, the scheduler and the motion
//! controller: the belt frame (metres, architecture.md) and each CNC's
//! machine frame (millimetres, GRBL).

use nalgebra::Vector3;

/// Where a CNC's machine zero sits in the belt frame. Machine axes are
/// parallel to the belt's (X along travel, Y across, Z up), and GRBL's
/// machine space lies on the negative side of zero (homing to the top far
/// corner), so positions in reach have machine coordinates ≤ 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineFrame {
    pub origin_m: Vector3<f64>,
}

impl MachineFrame {
    pub fn new(origin_x_m: f64, origin_y_m: f64, origin_z_m: f64) -> Self {
        MachineFrame {
            origin_m: Vector3::new(origin_x_m, origin_y_m, origin_z_m),
        }
    }

    /// Belt-frame metres to machine millimetres.
    pub fn to_machine_mm(&self, belt_m: Vector3<f64>) -> Vector3<f64> {
        (belt_m - self.origin_m) * 1000.0
    }

    /// Machine millimetres to belt-frame metres.
    pub fn to_belt_m(&self, machine_mm: Vector3<f64>) -> Vector3<f64> {
        self.origin_m + machine_mm / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn belt_and_machine_coordinates_round_trip() {
        let f = MachineFrame::new(2.6, 0.75, 0.15);
        let p = Vector3::new(2.25, 0.3, 0.04);
        let mm = f.to_machine_mm(p);
        assert!((mm - Vector3::new(-350.0, -450.0, -110.0)).norm() < 1e-9);
        assert!((f.to_belt_m(mm) - p).norm() < 1e-12);
    }
}
