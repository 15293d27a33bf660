//! The pixel → belt homography: fitted from four or more point
//! correspondences (OpenCV's `findHomography`, least squares), applied to
//! image points, and measured by its reprojection error in pixels.

use nalgebra::{Matrix3, Vector3};
use opencv::core::{Mat, Point2d, Vector};
use opencv::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct Homography {
    /// Pixel (u, v, 1) → belt (x, y, w), metres.
    pub px_to_belt: Matrix3<f64>,
    pub belt_to_px: Matrix3<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub homography: Homography,
    /// Root mean square and largest distance, px, between each pixel point
    /// and its belt point taken back into the image.
    pub rms_error_px: f64,
    pub max_error_px: f64,
}

fn apply(m: &Matrix3<f64>, a: f64, b: f64) -> (f64, f64) {
    let p = m * Vector3::new(a, b, 1.0);
    (p.x / p.z, p.y / p.z)
}

impl Homography {
    pub fn new(px_to_belt: Matrix3<f64>) -> Result<Self, String> {
        let belt_to_px = px_to_belt
            .try_inverse()
            .filter(|m| m.iter().all(|v| v.is_finite()))
            .ok_or("the homography is singular")?;
        Ok(Homography {
            px_to_belt,
            belt_to_px,
        })
    }

    /// Pixel → belt metres.
    pub fn apply(&self, u_px: f64, v_px: f64) -> (f64, f64) {
        apply(&self.px_to_belt, u_px, v_px)
    }

    /// Belt metres → pixel.
    pub fn pixel_of(&self, x_m: f64, y_m: f64) -> (f64, f64) {
        apply(&self.belt_to_px, x_m, y_m)
    }

    /// Belt area of one pixel at (u, v), m² (the Jacobian's determinant).
    pub fn area_scale_at(&self, u: f64, v: f64) -> f64 {
        let (x0, y0) = self.apply(u - 0.5, v);
        let (x1, y1) = self.apply(u + 0.5, v);
        let (x2, y2) = self.apply(u, v - 0.5);
        let (x3, y3) = self.apply(u, v + 0.5);
        ((x1 - x0) * (y3 - y2) - (y1 - y0) * (x3 - x2)).abs()
    }

    /// Fits the homography taking `px` to `belt_m` (at least four pairs, not
    /// three on a line).
    pub fn fit(px: &[(f64, f64)], belt_m: &[(f64, f64)]) -> Result<Fit, String> {
        if px.len() != belt_m.len() {
            return Err(format!(
                "{} pixel points but {} belt points: give them in pairs",
                px.len(),
                belt_m.len()
            ));
        }
        if px.len() < 4 {
            return Err(format!(
                "{} point pair(s): a homography needs at least 4",
                px.len()
            ));
        }
        let src: Vector<Point2d> = px.iter().map(|&(u, v)| Point2d::new(u, v)).collect();
        let dst: Vector<Point2d> = belt_m.iter().map(|&(x, y)| Point2d::new(x, y)).collect();
        let h = opencv::calib3d::find_homography(&src, &dst, &mut Mat::default(), 0, 3.0)
            .map_err(|e| format!("OpenCV findHomography: {e}"))?;
        if h.rows() != 3 || h.cols() != 3 {
            return Err(
                "the points are degenerate (three or more on one line?): no homography fits them"
                    .into(),
            );
        }
        let mut m = Matrix3::zeros();
        for r in 0..3 {
            for c in 0..3 {
                m[(r, c)] = *h
                    .at_2d::<f64>(r as i32, c as i32)
                    .map_err(|e| e.to_string())?;
            }
        }
        let homography = Homography::new(m)?;
        let errors: Vec<f64> = px
            .iter()
            .zip(belt_m)
            .map(|(&(u, v), &(x, y))| {
                let (pu, pv) = homography.pixel_of(x, y);
                (pu - u).hypot(pv - v)
            })
            .collect();
        let rms_error_px = (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt();
        let max_error_px = errors.iter().cloned().fold(0.0, f64::max);
        if !rms_error_px.is_finite() {
            return Err("the fitted homography sends a point to infinity".into());
        }
        Ok(Fit {
            homography,
            rms_error_px,
            max_error_px,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_pairs_give_back_a_known_perspective_map() {
        let truth = Homography::new(Matrix3::new(
            0.001, 0.0001, 0.2, -0.00005, 0.0011, -0.06, 0.00002, 0.00001, 1.0,
        ))
        .unwrap();
        let px = [
            (0.0, 0.0),
            (1279.0, 0.0),
            (1279.0, 719.0),
            (0.0, 719.0),
            (640.0, 360.0),
        ];
        let belt: Vec<_> = px.iter().map(|&(u, v)| truth.apply(u, v)).collect();
        let fit = Homography::fit(&px, &belt).unwrap();
        assert!(fit.max_error_px < 1e-3, "{}", fit.max_error_px);
        let (x, y) = fit.homography.apply(321.0, 123.0);
        let (tx, ty) = truth.apply(321.0, 123.0);
        assert!((x - tx).abs() < 1e-6 && (y - ty).abs() < 1e-6);
    }

    #[test]
    fn too_few_unpaired_or_collinear_points_are_refused() {
        let p = [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)];
        assert!(Homography::fit(&p, &p).unwrap_err().contains("at least 4"));
        assert!(Homography::fit(&p, &p[..2])
            .unwrap_err()
            .contains("in pairs"));
        let line = [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (3.0, 0.0)];
        assert!(Homography::fit(&line, &line).is_err());
    }
}
