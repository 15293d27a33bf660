//! Calibration from an image of a chessboard lying flat on the belt: find
//! its inner corners (OpenCV's `findChessboardCornersSB`, sub-pixel), pair
//! each with its known belt position, fit the pixel → belt homography, and
//! write the pairs as the detector's parameters.
//!
//! The board's convention: `inner_cols` × `inner_rows` inner corners,
//! columns along the image's u axis (the belt's travel), and the inner
//! corner nearest the image's top-left at belt (`origin_x_m`,
//! `origin_y_m`). Corner (row i, column j) is at origin + (j, i) · square.

use super::homography::{Fit, Homography};
use nalgebra::Matrix3;
use opencv::core::{self, Mat, Point, Point2f, Scalar, Size, Vector, CV_8UC3};
use opencv::prelude::*;
use opencv::{calib3d, imgproc};
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub struct Chessboard {
    pub inner_cols: u32,
    pub inner_rows: u32,
    pub square_m: f64,
    pub origin_x_m: f64,
    pub origin_y_m: f64,
}

impl Chessboard {
    /// Belt position of inner corner (row, column).
    pub fn corner_m(&self, row: u32, col: u32) -> (f64, f64) {
        (
            self.origin_x_m + col as f64 * self.square_m,
            self.origin_y_m + row as f64 * self.square_m,
        )
    }
}

#[derive(Debug, Clone)]
pub struct Calibration {
    pub fit: Fit,
    pub px: Vec<(f64, f64)>,
    pub belt_m: Vec<(f64, f64)>,
}

/// Finds the board in `image` (BGR or grey) and fits the homography.
pub fn calibrate(image: &Mat, board: &Chessboard) -> Result<Calibration, String> {
    if board.inner_cols < 2 || board.inner_rows < 2 {
        return Err("a chessboard needs at least 2 × 2 inner corners".into());
    }
    let grey = if image.channels() == 1 {
        image.clone()
    } else {
        let mut g = Mat::default();
        imgproc::cvt_color_def(image, &mut g, imgproc::COLOR_BGR2GRAY)
            .map_err(|e| format!("converting the image to grey: {e}"))?;
        g
    };
    let size = Size::new(board.inner_cols as i32, board.inner_rows as i32);
    let mut corners = Vector::<Point2f>::new();
    let found = calib3d::find_chessboard_corners_sb(
        &grey,
        size,
        &mut corners,
        calib3d::CALIB_CB_NORMALIZE_IMAGE
            | calib3d::CALIB_CB_EXHAUSTIVE
            | calib3d::CALIB_CB_ACCURACY,
    )
    .map_err(|e| format!("OpenCV findChessboardCornersSB: {e}"))?;
    if !found || corners.len() != (board.inner_cols * board.inner_rows) as usize {
        return Err(format!(
            "no {}×{} chessboard (inner corners) found in the image",
            board.inner_cols, board.inner_rows
        ));
    }
    let mut px: Vec<(f64, f64)> = corners.iter().map(|p| (p.x as f64, p.y as f64)).collect();
    // The detector may return the grid from either end: start nearest the top-left.
    let (first, last) = (px[0], px[px.len() - 1]);
    if first.0 + first.1 > last.0 + last.1 {
        px.reverse();
    }
    let mut belt_m = Vec::with_capacity(px.len());
    for i in 0..board.inner_rows {
        for j in 0..board.inner_cols {
            belt_m.push(board.corner_m(i, j));
        }
    }
    let fit = Homography::fit(&px, &belt_m)?;
    Ok(Calibration { fit, px, belt_m })
}

/// The detector's parameters for a calibration, as a `ros__parameters` file.
pub fn params_yaml(c: &Calibration, node: &str, source: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `cncpick calibrate` from {source}: {} point pairs,\n\
         # reprojection error {:.3} px RMS, {:.3} px at most.",
        c.px.len(),
        c.fit.rms_error_px,
        c.fit.max_error_px
    );
    let list = |pts: &[(f64, f64)], digits: usize| -> String {
        let items: Vec<String> = pts
            .iter()
            .map(|(a, b)| format!("{a:.digits$}, {b:.digits$}"))
            .collect();
        format!("[{}]", items.join(", "))
    };
    let _ = writeln!(s, "{node}:\n  ros__parameters:");
    let _ = writeln!(s, "    calib_points_px: {}", list(&c.px, 4));
    let _ = writeln!(s, "    calib_points_belt_m: {}", list(&c.belt_m, 6));
    s
}

/// Draws `board` on a belt-grey image as a camera with `belt_to_px` would
/// see it (anti-aliased), with a white border one square wide.
pub fn render_chessboard(
    belt_to_px: &Matrix3<f64>,
    width_px: i32,
    height_px: i32,
    board: &Chessboard,
) -> opencv::Result<Mat> {
    const SHIFT: i32 = 8;
    let one = (1 << SHIFT) as f64;
    let mut img = Mat::new_rows_cols_with_default(
        height_px,
        width_px,
        CV_8UC3,
        Scalar::new(72.0, 70.0, 68.0, 0.0),
    )?;
    let h = Homography::new(belt_to_px.try_inverse().unwrap_or_else(Matrix3::identity))
        .map_err(|e| opencv::Error::new(core::StsBadArg, e))?;
    let to_px = |x: f64, y: f64| {
        let (u, v) = h.pixel_of(x, y);
        Point::new((u * one).round() as i32, (v * one).round() as i32)
    };
    let mut quad = |x0: f64, y0: f64, x1: f64, y1: f64, grey: f64| -> opencv::Result<()> {
        let pts: Vector<Point> = [to_px(x0, y0), to_px(x1, y0), to_px(x1, y1), to_px(x0, y1)]
            .into_iter()
            .collect();
        imgproc::fill_convex_poly(&mut img, &pts, Scalar::all(grey), imgproc::LINE_AA, SHIFT)
    };
    let sq = board.square_m;
    let (cols, rows) = (board.inner_cols as i32 + 1, board.inner_rows as i32 + 1);
    // Square (i, j) spans from corner (i - 1, j - 1) to corner (i, j).
    let (x0, y0) = (board.origin_x_m - sq, board.origin_y_m - sq);
    quad(
        x0 - sq,
        y0 - sq,
        x0 + (cols + 1) as f64 * sq,
        y0 + (rows + 1) as f64 * sq,
        235.0,
    )?;
    for i in 0..rows {
        for j in 0..cols {
            if (i + j) % 2 == 0 {
                let (xa, ya) = (x0 + j as f64 * sq, y0 + i as f64 * sq);
                quad(xa, ya, xa + sq, ya + sq, 20.0)?;
            }
        }
    }
    Ok(img)
}
