//! The opencv crate builds against Debian's OpenCV with only the modules we
//! enable, and those modules work: draw with imgproc, round-trip through
//! imgcodecs.

use opencv::core::{Mat, Point, Scalar, Vector, CV_8UC3};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};

#[test]
fn a_drawn_disc_survives_a_png_round_trip_pixel_for_pixel() {
    let mut img = Mat::new_rows_cols_with_default(48, 64, CV_8UC3, Scalar::all(0.0)).unwrap();
    // BGR red disc of radius 10 at (32, 24).
    imgproc::circle(
        &mut img,
        Point::new(32, 24),
        10,
        Scalar::new(0.0, 0.0, 255.0, 0.0),
        imgproc::FILLED,
        imgproc::LINE_8,
        0,
    )
    .unwrap();
    let mut png = Vector::<u8>::new();
    assert!(imgcodecs::imencode(".png", &img, &mut png, &Vector::new()).unwrap());
    assert_eq!(&png.as_slice()[1..4], b"PNG");
    let back = imgcodecs::imdecode(&png, imgcodecs::IMREAD_COLOR).unwrap();
    assert_eq!((back.rows(), back.cols()), (48, 64));
    let centre = *back.at_2d::<opencv::core::Vec3b>(24, 32).unwrap();
    let corner = *back.at_2d::<opencv::core::Vec3b>(0, 0).unwrap();
    assert_eq!(centre.0, [0, 0, 255]);
    assert_eq!(corner.0, [0, 0, 0]);
    // The disc covers about pi * 10^2 pixels.
    let mut red = 0;
    for r in 0..back.rows() {
        for c in 0..back.cols() {
            if back.at_2d::<opencv::core::Vec3b>(r, c).unwrap().0 == [0, 0, 255] {
                red += 1;
            }
        }
    }
    assert!((300..=340).contains(&red), "{red} red pixels");
}
