//! A constant-velocity Kalman filter in the belt plane: state (x, y, vx,
//! vy) in metres and m/s, position measurements. Pure: time steps are
//! passed in.

use nalgebra::{Matrix2, Matrix2x4, Matrix4, Vector2, Vector4};

#[derive(Debug, Clone, PartialEq)]
pub struct Kalman {
    /// x, y, vx, vy.
    pub state: Vector4<f64>,
    pub cov: Matrix4<f64>,
}

fn h() -> Matrix2x4<f64> {
    Matrix2x4::new(1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)
}

impl Kalman {
    /// Starts at `pos` moving at `vel`, with those variances.
    pub fn new(pos: Vector2<f64>, vel: Vector2<f64>, pos_var: f64, vel_var: f64) -> Self {
        Kalman {
            state: Vector4::new(pos.x, pos.y, vel.x, vel.y),
            cov: Matrix4::from_diagonal(&Vector4::new(pos_var, pos_var, vel_var, vel_var)),
        }
    }

    pub fn position(&self) -> Vector2<f64> {
        Vector2::new(self.state[0], self.state[1])
    }

    pub fn velocity(&self) -> Vector2<f64> {
        Vector2::new(self.state[2], self.state[3])
    }

    /// The position's covariance.
    pub fn position_cov(&self) -> Matrix2<f64> {
        self.cov.fixed_view::<2, 2>(0, 0).into()
    }

    /// Moves the state `dt_s` on, with white-noise acceleration of
    /// variance `accel_var` (m²/s⁴) on each axis.
    pub fn predict(&mut self, dt_s: f64, accel_var: f64) {
        let f = Matrix4::new(
            1.0, 0.0, dt_s, 0.0, //
            0.0, 1.0, 0.0, dt_s, //
            0.0, 0.0, 1.0, 0.0, //
            0.0, 0.0, 0.0, 1.0,
        );
        let (t2, t3, t4) = (dt_s * dt_s, dt_s.powi(3), dt_s.powi(4));
        let q = Matrix4::new(
            t4 / 4.0,
            0.0,
            t3 / 2.0,
            0.0, //
            0.0,
            t4 / 4.0,
            0.0,
            t3 / 2.0, //
            t3 / 2.0,
            0.0,
            t2,
            0.0, //
            0.0,
            t3 / 2.0,
            0.0,
            t2,
        ) * accel_var;
        self.state = f * self.state;
        self.cov = f * self.cov * f.transpose() + q;
    }

    /// The innovation of measurement `z` (noise covariance `r`) and its covariance.
    pub fn innovation(&self, z: Vector2<f64>, r: &Matrix2<f64>) -> (Vector2<f64>, Matrix2<f64>) {
        let h = h();
        (z - h * self.state, h * self.cov * h.transpose() + r)
    }

    /// Squared Mahalanobis distance of `z` from the predicted position;
    /// infinite if the innovation covariance is singular.
    pub fn mahalanobis2(&self, z: Vector2<f64>, r: &Matrix2<f64>) -> f64 {
        let (y, s) = self.innovation(z, r);
        match s.try_inverse() {
            Some(si) => (y.transpose() * si * y)[(0, 0)],
            None => f64::INFINITY,
        }
    }

    /// Takes measurement `z` in (Joseph form, so the covariance stays symmetric).
    pub fn update(&mut self, z: Vector2<f64>, r: &Matrix2<f64>) {
        let (y, s) = self.innovation(z, r);
        let Some(si) = s.try_inverse() else { return };
        let h = h();
        let k = self.cov * h.transpose() * si;
        self.state += k * y;
        let i_kh = Matrix4::identity() - k * h;
        self.cov = i_kh * self.cov * i_kh.transpose() + k * r * k.transpose();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_at_constant_velocity_is_followed_and_its_speed_learned() {
        let r = Matrix2::identity() * 1e-8; // 0.1 mm
        let mut kf = Kalman::new(Vector2::new(0.2, 0.3), Vector2::new(0.0, 0.0), 1e-6, 0.1);
        let dt = 1.0 / 30.0;
        for k in 1..=60 {
            kf.predict(dt, 1e-4);
            let t = k as f64 * dt;
            kf.update(Vector2::new(0.2 + 0.2 * t, 0.3), &r);
        }
        assert!((kf.velocity().x - 0.2).abs() < 1e-3, "{}", kf.velocity().x);
        assert!(kf.velocity().y.abs() < 1e-3);
        // Dead reckoning: the uncertainty grows with time unseen.
        let before = kf.position_cov()[(0, 0)];
        kf.predict(3.0, 1e-4);
        assert!(kf.position_cov()[(0, 0)] > before);
        assert!((kf.position().x - (0.2 + 0.2 * 5.0)).abs() < 3e-3);
    }

    #[test]
    fn the_gate_distance_grows_with_the_miss() {
        let kf = Kalman::new(Vector2::new(1.0, 0.1), Vector2::new(0.2, 0.0), 1e-6, 1e-6);
        let r = Matrix2::identity() * 1e-6;
        let near = kf.mahalanobis2(Vector2::new(1.001, 0.1), &r);
        let far = kf.mahalanobis2(Vector2::new(1.01, 0.1), &r);
        assert!(near < 1.0 && far > 40.0, "{near} {far}");
    }
}
