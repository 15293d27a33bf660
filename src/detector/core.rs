//! The detector's pure core: one BGR frame in, objects in belt metres out.
//!
//! A classical pipeline, configurable per class: colour thresholds in HSV
//! (hue window, minimum saturation and value), a morphological opening,
//! outer contours, then per contour its moments (centre), its minimum-area
//! rectangle (size and yaw) and an area gate against the class's size.
//! Objects cut by the edge of the region of interest are left for a later
//! frame, and two detections closer than `duplicate_distance_m` in one
//! frame are one object (the more confident is kept).
//!
//! The HSV thresholds are applied through a table over every 24-bit BGR
//! colour, built once from OpenCV's own BGR→HSV conversion. Labelling a
//! frame is then one lookup per pixel instead of a colour conversion and
//! one `inRange` per class, and the masks are the same bits.
//!
//! Objects cover a few per cent of a frame, so the per-class steps (the
//! compare, the opening, the contours) run only around them. Labelling
//! marks each 32-pixel tile where a row of labelled pixels ends that is as
//! long as the opening's kernel (a pixel the opening keeps has its whole
//! kernel labelled; scattered noise does not mark a tile). The marked
//! tiles' groups become rectangles grown by a margin, merged until none
//! overlap, and each is worked on as an image of its own with a kernel's
//! side of context about it. Nothing the opening keeps lies outside them,
//! and the margin gives the opening and the contours the whole frame's
//! view, so the detections are the whole frame's
//! ([`Detector::detect_whole`], and the test that compares them).
//!
//! Labelling itself looks first at every kernel-side-th pixel (and the
//! last) of every kernel-side-th row (and the last): only the tiles
//! holding a labelled one, and their neighbours, are labelled in full, in
//! the rows less than a kernel's side from it. A square of labelled
//! pixels as big as the kernel cannot slip between the samples, so only
//! pixels the opening removes anyway are left out
//! ([`Detector::detect_whole`] labels every pixel).

use super::homography::Homography;
use opencv::core::{self, Mat, Point, Rect, Scalar, Size, Vec3b, Vector, CV_8UC1, CV_8UC3};
use opencv::imgproc;
use opencv::prelude::*;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Box,
    Disc,
}

impl Shape {
    pub fn parse(s: &str) -> Option<Shape> {
        match s {
            "box" => Some(Shape::Box),
            "disc" => Some(Shape::Disc),
            _ => None,
        }
    }
}

/// One class: how it looks and how big it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassSpec {
    pub name: String,
    pub shape: Shape,
    /// Hue window centre and half-width, degrees (0..360, wrapping).
    pub hue_deg: f64,
    pub hue_tolerance_deg: f64,
    /// Minimum saturation and value, 0..255 (OpenCV's 8-bit HSV).
    pub saturation_min: u8,
    pub value_min: u8,
    /// Footprint: length along the object's long axis, width across
    /// (a disc's diameter is its length).
    pub length_m: f64,
    pub width_m: f64,
}

impl ClassSpec {
    pub fn area_m2(&self) -> f64 {
        match self.shape {
            Shape::Box => self.length_m * self.width_m,
            Shape::Disc => std::f64::consts::FRAC_PI_4 * self.length_m * self.length_m,
        }
    }

    /// Whether an OpenCV 8-bit hue (0..180, 2° steps) is in the window.
    pub fn hue_accepts(&self, h: u8) -> bool {
        let d = (h as f64 * 2.0 - self.hue_deg).rem_euclid(360.0);
        d.min(360.0 - d) <= self.hue_tolerance_deg
    }

    /// The window as `inRange` bounds on OpenCV's hue: one or two
    /// inclusive intervals (two when it wraps past 0).
    pub fn hue_ranges(&self) -> Vec<(u8, u8)> {
        let mut out: Vec<(u8, u8)> = Vec::new();
        for h in 0..180u8 {
            if self.hue_accepts(h) {
                match out.last_mut() {
                    Some((_, hi)) if *hi + 1 == h => *hi = h,
                    _ => out.push((h, h)),
                }
            }
        }
        if out.len() > 1 && out[0].0 == 0 && out[out.len() - 1].1 == 179 {
            // Wraps: report the upper part first, as a reader would expect.
            out.rotate_left(1);
        }
        out
    }

    pub fn accepts(&self, hsv: [u8; 3]) -> bool {
        self.hue_accepts(hsv[0]) && hsv[1] >= self.saturation_min && hsv[2] >= self.value_min
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    pub classes: Vec<ClassSpec>,
    pub px_to_belt: Homography,
    /// Region of interest in the image; `None` is the whole image.
    pub roi_px: Option<Rect>,
    pub belt_width_m: f64,
    pub lanes: u32,
    /// Side of the square opening kernel, px (0 or 1: no opening).
    pub open_px: i32,
    /// Accepted area: the class's area times 1 ± this.
    pub area_tolerance: f64,
    pub min_confidence: f64,
    pub duplicate_distance_m: f64,
    /// A contour this close to the ROI's edge is cut off: left for a later frame.
    pub border_margin_px: i32,
}

/// One object found in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub class: usize,
    pub x_m: f64,
    pub y_m: f64,
    /// Along the object's long axis, and across it.
    pub size_x_m: f64,
    pub size_y_m: f64,
    /// The long axis's angle from belt x, in (-π/2, π/2]; 0 for discs.
    pub yaw_rad: f64,
    pub lane: u32,
    pub confidence: f64,
    /// Pixel bounding box in the full image: x, y, width, height.
    pub bbox_px: [i32; 4],
    /// Centre in the full image, px.
    pub centre_px: (f64, f64),
}

/// What one frame gave beyond its detections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameStats {
    pub contours: usize,
    /// Cut by the ROI's edge.
    pub partial: usize,
    /// Outside the class's area window (too small: noise; too big: merged).
    pub wrong_size: usize,
    pub low_confidence: usize,
    pub duplicates: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DetectError {
    #[error("the frame is {0}; the detector takes 8-bit BGR (CV_8UC3)")]
    PixelFormat(String),
    #[error("the region of interest {roi:?} does not fit in a {width}×{height} frame")]
    Roi { roi: Rect, width: i32, height: i32 },
    #[error("OpenCV: {0}")]
    OpenCv(String),
}

impl From<opencv::Error> for DetectError {
    fn from(e: opencv::Error) -> Self {
        DetectError::OpenCv(e.to_string())
    }
}

/// Label of every 24-bit BGR colour (index `b << 16 | g << 8 | r`): 0 for
/// none, else 1 + the first class whose thresholds accept it.
///
/// Built with OpenCV's own operations throughout (a node's configure waits
/// for it): the colours to HSV, then per channel a 256-entry table of the
/// classes (a bit each, eight at a time) accepting that value, the three
/// ANDed, and the lowest bit set turned into its label. The 2²⁴ colours
/// are a 4096 × 4096 image, done [`TABLE_STRIP_ROWS`] rows at a time: all
/// of it at once held about 300 MB of intermediate images for a moment.
pub fn colour_table(classes: &[ClassSpec]) -> opencv::Result<Vec<u8>> {
    const SIDE: usize = 4096;
    // Row r, column c holds colour i = r·4096 + c: b = r >> 4,
    // g = (r & 15) << 4 | c >> 8, r = c & 255. Every row is the first one
    // plus a constant (b, g's high half, 0).
    let first: Vec<u8> = (0..SIDE)
        .flat_map(|c| [0, (c >> 8) as u8, c as u8])
        .collect();
    let first = Mat::new_rows_cols_with_data(1, SIDE as i32 * 3, &first)?;
    let first = first.reshape(3, 1)?;
    let offsets: Vec<u8> = (0..SIDE)
        .flat_map(|r| [(r >> 4) as u8, ((r & 15) << 4) as u8, 0])
        .collect();
    let mut table = vec![0u8; SIDE * SIDE];
    for (strip, offsets) in offsets.chunks(TABLE_STRIP_ROWS * 3).enumerate() {
        let rows = offsets.len() / 3;
        let offsets = Mat::new_rows_cols_with_data(rows as i32, 3, offsets)?;
        let offsets = offsets.reshape(3, rows as i32)?;
        let labels = strip_labels(&first, &offsets, classes)?;
        let at = strip * TABLE_STRIP_ROWS * SIDE;
        table[at..at + rows * SIDE].copy_from_slice(labels.data_bytes()?);
    }
    Ok(table)
}

/// Rows of [`colour_table`]'s image built at once (of 4096).
const TABLE_STRIP_ROWS: usize = 256;

/// [`colour_table`]'s labels for the rows whose colours are `first` (one
/// row) plus each row of `offsets` (one column).
fn strip_labels(
    first: &(impl MatTraitConst + core::ToInputArray),
    offsets: &(impl MatTraitConst + core::ToInputArray),
    classes: &[ClassSpec],
) -> opencv::Result<Mat> {
    let rows = core::repeat(first, offsets.rows(), 1)?;
    let cols = core::repeat(offsets, 1, first.cols())?;
    let mut all = Mat::default();
    core::add(&rows, &cols, &mut all, &core::no_array(), -1)?;
    let mut hsv = Mat::default();
    imgproc::cvt_color_def(&all, &mut hsv, imgproc::COLOR_BGR2HSV)?;
    let mut channels = Vector::<Mat>::new();
    core::split(&hsv, &mut channels)?;

    let mut table = Mat::zeros(all.rows(), all.cols(), CV_8UC1)?.to_mat()?;
    for (chunk_i, chunk) in classes.chunks(8).enumerate() {
        let lut = |accepts: &dyn Fn(&ClassSpec, u8) -> bool| -> opencv::Result<Mat> {
            let bits: Vec<u8> = (0..=255u8)
                .map(|v| {
                    chunk
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| accepts(c, v))
                        .fold(0u8, |m, (k, _)| m | 1 << k)
                })
                .collect();
            Mat::new_rows_cols_with_data(1, 256, &bits)?.try_clone()
        };
        let luts = [
            lut(&|c, v| c.hue_accepts(v))?,
            lut(&|c, v| v >= c.saturation_min)?,
            lut(&|c, v| v >= c.value_min)?,
        ];
        let mut both = Mat::default();
        for (k, l) in luts.iter().enumerate() {
            let mut bits = Mat::default();
            core::lut(&channels.get(k)?, l, &mut bits)?;
            both = if k == 0 {
                bits
            } else {
                let mut and = Mat::default();
                core::bitwise_and_def(&both, &bits, &mut and)?;
                and
            };
        }
        // Lowest bit set -> its class's label; none -> 0.
        let labels: Vec<u8> = (0..=255u8)
            .map(|m| {
                if m == 0 {
                    0
                } else {
                    (chunk_i * 8) as u8 + m.trailing_zeros() as u8 + 1
                }
            })
            .collect();
        let labels = Mat::new_rows_cols_with_data(1, 256, &labels)?;
        let mut labelled = Mat::default();
        core::lut(&both, &labels, &mut labelled)?;
        // An earlier chunk's classes come first.
        let mut unlabelled = Mat::default();
        core::compare(&table, &Scalar::all(0.0), &mut unlabelled, core::CMP_EQ)?;
        labelled.copy_to_masked(&mut table, &unlabelled)?;
    }
    Ok(table)
}

pub struct Detector {
    cfg: DetectorConfig,
    table: Vec<u8>,
    labels: Mat,
    mask: Mat,
    opened: Mat,
    kernel: Mat,
    contours: Vector<Vector<Point>>,
    /// Per tile of the labels (`TILE_PX` square, row-major): whether a
    /// run of labelled pixels as long as the kernel ends in it.
    busy: Vec<bool>,
    /// Per tile: the classes labelled in it (bit `k` for class `k`; bit
    /// 63 for class 63 and above).
    present: Vec<u64>,
    /// Per row of the ROI (tiles across): near a labelled sample of it.
    near: Vec<bool>,
    pub last: FrameStats,
    /// The last frame's rectangles worked on, and the share of the ROI
    /// they cover (1 with the whole ROI).
    pub last_regions: (usize, f64),
}

/// The side of the tiles labelling marks, px.
const TILE_PX: i32 = 32;

impl Detector {
    pub fn new(cfg: DetectorConfig) -> opencv::Result<Self> {
        if cfg.classes.len() > 254 {
            return Err(opencv::Error::new(
                core::StsBadArg,
                "at most 254 classes".to_string(),
            ));
        }
        let table = colour_table(&cfg.classes)?;
        let k = cfg.open_px.max(1);
        let kernel = imgproc::get_structuring_element_def(imgproc::MORPH_RECT, Size::new(k, k))?;
        Ok(Detector {
            cfg,
            table,
            labels: Mat::default(),
            mask: Mat::default(),
            opened: Mat::default(),
            kernel,
            contours: Vector::new(),
            busy: Vec::new(),
            present: Vec::new(),
            near: Vec::new(),
            last: FrameStats::default(),
            last_regions: (0, 0.0),
        })
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Takes new settings; the colour table is rebuilt only if the classes'
    /// colours changed.
    pub fn reconfigure(&mut self, cfg: DetectorConfig) -> opencv::Result<()> {
        let same_colours = cfg.classes.len() == self.cfg.classes.len()
            && cfg.classes.iter().zip(&self.cfg.classes).all(|(a, b)| {
                (
                    a.hue_deg,
                    a.hue_tolerance_deg,
                    a.saturation_min,
                    a.value_min,
                ) == (
                    b.hue_deg,
                    b.hue_tolerance_deg,
                    b.saturation_min,
                    b.value_min,
                )
            });
        if !same_colours {
            self.table = colour_table(&cfg.classes)?;
        }
        let k = cfg.open_px.max(1);
        self.kernel = imgproc::get_structuring_element_def(imgproc::MORPH_RECT, Size::new(k, k))?;
        self.cfg = cfg;
        Ok(())
    }

    /// The class labels of `frame`'s ROI (0: none, k + 1: class k).
    pub fn labels(&self) -> &Mat {
        &self.labels
    }

    fn roi(&self, frame: &Mat) -> Result<Rect, DetectError> {
        let (w, h) = (frame.cols(), frame.rows());
        let roi = self.cfg.roi_px.unwrap_or(Rect::new(0, 0, w, h));
        if roi.x < 0 || roi.y < 0 || roi.width <= 0 || roi.height <= 0 {
            return Err(DetectError::Roi {
                roi,
                width: w,
                height: h,
            });
        }
        if roi.x + roi.width > w || roi.y + roi.height > h {
            return Err(DetectError::Roi {
                roi,
                width: w,
                height: h,
            });
        }
        Ok(roi)
    }

    /// Labels the ROI through the colour table, and marks the tiles where
    /// a row holds `run_px` labelled pixels in a row (the least a pixel the
    /// opening keeps has about it: its whole kernel labelled, or as much of
    /// it as lies inside the ROI) ending in that tile.
    ///
    /// `every_pixel` false: only a sample is looked at first, every
    /// `run_px`-th pixel (and the last) of every `run_px`-th row (and the
    /// last); a row's tile is then labelled only if it or a neighbour holds
    /// a labelled sample within `run_px - 1` rows of it, and the others are
    /// left unlabelled. A pixel the opening keeps has a kernel of labelled
    /// pixels about it (or as much of one as lies inside the ROI), which
    /// holds a sampled row and, on that row, a labelled sample; every row
    /// of that kernel is within `run_px - 1` rows of it, and the tiles
    /// the kernel's rows cross are that sample's or hold one of their own
    /// (crossing a whole tile, a row holds one there). So what is left out
    /// lies where no square kernel of labelled pixels fits, the opening
    /// (and with it every detection) is the same as with every pixel
    /// labelled. With the shipped kernel of 3, the first look reads a
    /// third of the rows.
    fn label(
        &mut self,
        frame: &Mat,
        roi: Rect,
        run_px: usize,
        every_pixel: bool,
    ) -> Result<(), DetectError> {
        if self.labels.rows() != roi.height || self.labels.cols() != roi.width {
            self.labels =
                Mat::new_rows_cols_with_default(roi.height, roi.width, CV_8UC1, Scalar::all(0.0))?;
        }
        let tiles_x = ((roi.width + TILE_PX - 1) / TILE_PX) as usize;
        let tiles_y = ((roi.height + TILE_PX - 1) / TILE_PX) as usize;
        self.busy.clear();
        self.busy.resize(tiles_x * tiles_y, false);
        self.present.clear();
        self.present.resize(tiles_x * tiles_y, 0);
        let tile = TILE_PX as usize;
        let stride = run_px.clamp(1, tile);
        let (height, width) = (roi.height as usize, roi.width as usize);
        let table = &self.table;
        let lookup =
            |p: &Vec3b| table[((p[0] as usize) << 16) | ((p[1] as usize) << 8) | p[2] as usize];
        let row_of = |r: usize| -> Result<&[Vec3b], DetectError> {
            Ok(&frame.at_row::<Vec3b>(roi.y + r as i32)?[roi.x as usize..roi.x as usize + width])
        };
        // Per sampled row, the tiles near a labelled sample of it.
        let near = &mut self.near;
        near.clear();
        if !every_pixel {
            near.resize(height * tiles_x, false);
            let last = ((height - 1) % stride != 0).then_some(height - 1);
            let rows = (0..height).step_by(stride).chain(last);
            for r in rows {
                let src = row_of(r)?;
                let near = &mut near[r * tiles_x..(r + 1) * tiles_x];
                let mut hit = |c: usize| {
                    if lookup(&src[c]) != 0 {
                        let t = c / tile;
                        near[t.saturating_sub(1)..=(t + 1).min(tiles_x - 1)].fill(true);
                    }
                };
                (0..width).step_by(stride).for_each(&mut hit);
                hit(width - 1);
            }
        }
        let mut wanted = vec![every_pixel; tiles_x];
        for r in 0..height {
            let src = row_of(r)?;
            let dst = self.labels.at_row_mut::<u8>(r as i32)?;
            let row = r / tile * tiles_x;
            if !every_pixel {
                // The sampled rows within `stride - 1` of this one: the
                // one at or above it, the next, and the last.
                let above = r - r % stride;
                wanted.fill(false);
                for s in [above, above + stride, height - 1] {
                    if s < height && s.abs_diff(r) < stride {
                        let near = &near[s * tiles_x..(s + 1) * tiles_x];
                        wanted.iter_mut().zip(near).for_each(|(w, n)| *w |= n);
                    }
                }
                if !wanted.contains(&true) {
                    dst.fill(0);
                    continue;
                }
            }
            // Labelled pixels in a row so far, across tiles. Past the
            // ROI's edges the opening sees no unlabelled pixel, so a run
            // from the left edge counts as long enough, and so does one
            // to the right edge.
            let mut run = run_px;
            for (t, (dst, src)) in dst.chunks_mut(tile).zip(src.chunks(tile)).enumerate() {
                if !wanted[t] {
                    dst.fill(0);
                    run = 0;
                    continue;
                }
                let mut any = 0u8;
                for (d, p) in dst.iter_mut().zip(src) {
                    *d = lookup(p);
                    any |= *d;
                }
                if any == 0 {
                    run = 0;
                    continue;
                }
                let mut present = 0u64;
                for &d in dst.iter() {
                    if d == 0 {
                        run = 0;
                        continue;
                    }
                    run += 1;
                    present |= 1u64 << (d as u32 - 1).min(63);
                    if run >= run_px {
                        self.busy[row + t] = true;
                    }
                }
                self.present[row + t] |= present;
            }
            if run > 0 {
                self.busy[row + tiles_x - 1] = true;
            }
        }
        Ok(())
    }

    /// Where the opening can keep pixels, in ROI pixels: each group of
    /// touching marked tiles, grown by `margin_px` and kept inside the ROI,
    /// the rectangles merged until none overlap. Every pixel the opening
    /// keeps lies in one, at least `margin_px` less a kernel's side inside
    /// its edges but for the ROI's own.
    fn regions(&self, roi: Rect, margin_px: i32) -> Vec<Rect> {
        let tiles_x = ((roi.width + TILE_PX - 1) / TILE_PX) as usize;
        let mut seen = vec![false; self.busy.len()];
        let mut rects: Vec<Rect> = Vec::new();
        let mut stack = Vec::new();
        for start in 0..self.busy.len() {
            if !self.busy[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            stack.push(start);
            let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
            while let Some(i) = stack.pop() {
                let (x, y) = (i % tiles_x, i / tiles_x);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                        if nx < 0 || ny < 0 || nx >= tiles_x as i64 {
                            continue;
                        }
                        let n = ny as usize * tiles_x + nx as usize;
                        if n < self.busy.len() && self.busy[n] && !seen[n] {
                            seen[n] = true;
                            stack.push(n);
                        }
                    }
                }
            }
            let t = TILE_PX;
            let (left, top) = (x0 as i32 * t - margin_px, y0 as i32 * t - margin_px);
            let (right, bottom) = (
                (x1 as i32 + 1) * t + margin_px,
                (y1 as i32 + 1) * t + margin_px,
            );
            rects.push(clip(left, top, right, bottom, roi));
        }
        // Merge overlapping rectangles until none overlap.
        let mut merged = true;
        while merged {
            merged = false;
            'pairs: for a in 0..rects.len() {
                for b in a + 1..rects.len() {
                    if (rects[a] & rects[b]).area() > 0 {
                        let u = rects[a] | rects[b];
                        rects[a] = u;
                        rects.swap_remove(b);
                        merged = true;
                        break 'pairs;
                    }
                }
            }
        }
        rects
    }

    /// The classes labelled in the tiles `r` (ROI pixels) meets: a pixel
    /// the opening keeps in `r` is of its class.
    fn present_in(&self, r: Rect, roi: Rect) -> u64 {
        let tiles_x = ((roi.width + TILE_PX - 1) / TILE_PX) as usize;
        let (x0, y0) = ((r.x / TILE_PX) as usize, (r.y / TILE_PX) as usize);
        let x1 = ((r.x + r.width - 1) / TILE_PX) as usize;
        let y1 = ((r.y + r.height - 1) / TILE_PX) as usize;
        (y0..=y1)
            .flat_map(|y| (x0..=x1).map(move |x| y * tiles_x + x))
            .filter_map(|i| self.present.get(i))
            .fold(0, |a, p| a | p)
    }

    /// Finds the objects of class `k` in `labels`, the ROI's labels over
    /// `grown`, whose pixels outside `inner` are only context: what the
    /// opening keeps there is cleared before the contours.
    fn find_class(
        &mut self,
        labels: &impl core::ToInputArray,
        grown: Rect,
        inner: Rect,
        k: usize,
        roi: Rect,
        found: &mut Vec<Detected>,
    ) -> Result<(), DetectError> {
        core::compare(
            labels,
            &Scalar::all(k as f64 + 1.0),
            &mut self.mask,
            core::CMP_EQ,
        )?;
        let mask = if self.cfg.open_px > 1 {
            imgproc::morphology_ex_def(
                &self.mask,
                &mut self.opened,
                imgproc::MORPH_OPEN,
                &self.kernel,
            )?;
            &mut self.opened
        } else {
            &mut self.mask
        };
        if grown != inner {
            let (gx, gy) = (inner.x - grown.x, inner.y - grown.y);
            let (w, h) = (grown.width, grown.height);
            let (ir, ib) = (gx + inner.width, gy + inner.height);
            for band in [
                Rect::new(0, 0, w, gy),
                Rect::new(0, ib, w, h - ib),
                Rect::new(0, gy, gx, inner.height),
                Rect::new(ir, gy, w - ir, inner.height),
            ] {
                if band.area() > 0 {
                    Mat::roi_mut(mask, band)?.set_to_def(&Scalar::all(0.0))?;
                }
            }
        }
        let at = grown.tl();
        imgproc::find_contours(
            mask,
            &mut self.contours,
            imgproc::RETR_EXTERNAL,
            imgproc::CHAIN_APPROX_SIMPLE,
            at,
        )?;
        for c in self.contours.iter() {
            self.last.contours += 1;
            if let Some(d) = measure(&self.cfg, k, &c, roi, &mut self.last)? {
                found.push(d);
            }
        }
        Ok(())
    }

    /// Finds the objects in `frame` (8-bit BGR), working on each class
    /// only around the labelled pixels (or on the whole ROI, when they
    /// cover over half of it).
    pub fn detect(&mut self, frame: &Mat) -> Result<Vec<Detected>, DetectError> {
        self.detect_in(frame, false)
    }

    /// As [`Detector::detect`], each class over the whole ROI: the
    /// reference the region path is tested against.
    pub fn detect_whole(&mut self, frame: &Mat) -> Result<Vec<Detected>, DetectError> {
        self.detect_in(frame, true)
    }

    fn detect_in(&mut self, frame: &Mat, whole: bool) -> Result<Vec<Detected>, DetectError> {
        if frame.typ() != CV_8UC3 {
            return Err(DetectError::PixelFormat(format!(
                "{} with {} channel(s) (OpenCV type {})",
                depth_name(frame.depth()),
                frame.channels(),
                frame.typ()
            )));
        }
        let roi = self.roi(frame)?;
        let k = self.cfg.open_px.max(1);
        self.label(frame, roi, k as usize, whole)?;
        self.last = FrameStats::default();
        // Every pixel the opening keeps lies within a kernel's side of a
        // marked tile; the contours need one unlabelled pixel about them.
        let mut rects = self.regions(roi, k + 1);
        let area: i64 = rects.iter().map(|r| r.area() as i64).sum();
        if whole || 2 * area > roi.area() as i64 {
            rects = vec![Rect::new(0, 0, roi.width, roi.height)];
        }
        let covered: i64 = rects.iter().map(|r| r.area() as i64).sum();
        self.last_regions = (rects.len(), covered as f64 / roi.area() as f64);
        let labels = std::mem::take(&mut self.labels);
        let mut found = Vec::new();
        let result = (|| {
            let present: Vec<u64> = rects.iter().map(|r| self.present_in(*r, roi)).collect();
            for class in 0..self.cfg.classes.len() {
                let bit = 1u64 << class.min(63);
                for (r, _) in rects.iter().zip(&present).filter(|(_, p)| *p & bit != 0) {
                    // The opening reaches a kernel's side (both ways over):
                    // worked on with that much about it, the rectangle's
                    // own pixels are the whole frame's.
                    let grown = grow(*r, k, roi);
                    let view = Mat::roi(&labels, grown)?;
                    self.find_class(&view, grown, *r, class, roi, &mut found)?;
                }
            }
            Ok::<_, DetectError>(())
        })();
        self.labels = labels;
        result?;
        let kept = suppress_duplicates(found, self.cfg.duplicate_distance_m, &mut self.last);
        Ok(kept)
    }
}

/// `r` grown by `by_px` on every side, kept inside `roi`'s size.
fn grow(r: Rect, by_px: i32, roi: Rect) -> Rect {
    clip(
        r.x - by_px,
        r.y - by_px,
        r.x + r.width + by_px,
        r.y + r.height + by_px,
        roi,
    )
}

/// The rectangle from (left, top) to (right, bottom), kept inside `roi`'s
/// size.
fn clip(left: i32, top: i32, right: i32, bottom: i32, roi: Rect) -> Rect {
    let (l, t) = (left.max(0), top.max(0));
    let (r, b) = (right.min(roi.width), bottom.min(roi.height));
    Rect::new(l, t, (r - l).max(0), (b - t).max(0))
}

fn depth_name(depth: i32) -> &'static str {
    match depth {
        core::CV_8U => "8-bit unsigned",
        core::CV_8S => "8-bit signed",
        core::CV_16U => "16-bit unsigned",
        core::CV_16S => "16-bit signed",
        core::CV_32S => "32-bit integer",
        core::CV_32F => "32-bit float",
        core::CV_64F => "64-bit float",
        _ => "of an unknown depth",
    }
}

/// Lane of a belt y: lane k covers [k·w/lanes, (k+1)·w/lanes), clamped to the belt.
pub fn lane_of(y_m: f64, belt_width_m: f64, lanes: u32) -> u32 {
    let k = (y_m / (belt_width_m / lanes as f64)).floor();
    k.clamp(0.0, (lanes - 1) as f64) as u32
}

/// Angle into (-π/2, π/2].
fn half_turn(a: f64) -> f64 {
    let mut a = a.rem_euclid(std::f64::consts::PI);
    if a > std::f64::consts::FRAC_PI_2 {
        a -= std::f64::consts::PI;
    }
    a
}

/// One contour (ROI pixel coordinates) of class `k` as a detection, or
/// `None` with the reason counted in `stats`.
fn measure(
    cfg: &DetectorConfig,
    k: usize,
    contour: &Vector<Point>,
    roi: Rect,
    stats: &mut FrameStats,
) -> Result<Option<Detected>, DetectError> {
    let bbox = imgproc::bounding_rect(contour)?;
    let m = cfg.border_margin_px;
    if bbox.x <= m
        || bbox.y <= m
        || bbox.x + bbox.width >= roi.width - m
        || bbox.y + bbox.height >= roi.height - m
    {
        stats.partial += 1;
        return Ok(None);
    }
    let mo = imgproc::moments(contour, false)?;
    if mo.m00 <= 0.0 {
        stats.wrong_size += 1;
        return Ok(None);
    }
    let (u, v) = (
        mo.m10 / mo.m00 + roi.x as f64,
        mo.m01 / mo.m00 + roi.y as f64,
    );
    // The contour runs through the boundary pixels' centres: the mask's
    // pixel count is its area plus half its perimeter (plus one).
    let perimeter = imgproc::arc_length(contour, true)?;
    let area_px = mo.m00 + perimeter / 2.0 + 1.0;
    let h = &cfg.px_to_belt;
    let area_m2 = area_px * h.area_scale_at(u, v);
    let class = &cfg.classes[k];
    let ratio = area_m2 / class.area_m2();
    if (ratio - 1.0).abs() > cfg.area_tolerance {
        stats.wrong_size += 1;
        return Ok(None);
    }
    let confidence = 1.0 - (ratio - 1.0).abs() / cfg.area_tolerance.max(1e-9);
    if confidence < cfg.min_confidence {
        stats.low_confidence += 1;
        return Ok(None);
    }
    let (x_m, y_m) = h.apply(u, v);
    // Size and yaw from the minimum-area rectangle, its corners taken to
    // the belt; one pixel added across each side for the centre-line contour.
    let rect = imgproc::min_area_rect(contour)?;
    let mut pts = [core::Point2f::default(); 4];
    rect.points(&mut pts)?;
    let belt: Vec<(f64, f64)> = pts
        .iter()
        .map(|p| h.apply(p.x as f64 + roi.x as f64, p.y as f64 + roi.y as f64))
        .collect();
    let side =
        |a: (f64, f64), b: (f64, f64)| ((b.0 - a.0).hypot(b.1 - a.1), (b.1 - a.1).atan2(b.0 - a.0));
    let (a, a_dir) = side(belt[0], belt[1]);
    let (b, b_dir) = side(belt[1], belt[2]);
    let px_m = h.area_scale_at(u, v).sqrt();
    let (long, short, dir) = if a >= b { (a, b, a_dir) } else { (b, a, b_dir) };
    let yaw_rad = match class.shape {
        Shape::Disc => 0.0,
        Shape::Box => half_turn(dir),
    };
    Ok(Some(Detected {
        class: k,
        x_m,
        y_m,
        size_x_m: long + px_m,
        size_y_m: short + px_m,
        yaw_rad,
        lane: lane_of(y_m, cfg.belt_width_m, cfg.lanes),
        confidence,
        bbox_px: [bbox.x + roi.x, bbox.y + roi.y, bbox.width, bbox.height],
        centre_px: (u, v),
    }))
}

/// Keeps the most confident of detections closer than `distance_m`; the
/// rest come out ordered by lane, then downstream first.
fn suppress_duplicates(
    mut found: Vec<Detected>,
    distance_m: f64,
    stats: &mut FrameStats,
) -> Vec<Detected> {
    found.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(a.x_m.total_cmp(&b.x_m))
            .then(a.y_m.total_cmp(&b.y_m))
    });
    let mut kept: Vec<Detected> = Vec::with_capacity(found.len());
    for d in found {
        if kept
            .iter()
            .any(|k| (k.x_m - d.x_m).hypot(k.y_m - d.y_m) < distance_m)
        {
            stats.duplicates += 1;
        } else {
            kept.push(d);
        }
    }
    kept.sort_by(|a, b| {
        a.lane
            .cmp(&b.lane)
            .then(b.x_m.partial_cmp(&a.x_m).unwrap_or(Ordering::Equal))
    });
    kept
}

/// `vision_{stamp_ms}_{lane}_{sequence}`: the sequence numbers a frame's
/// detections within each lane, downstream first (the order
/// [`Detector::detect`] returns).
pub fn vision_ids(stamp_ms: u64, detections: &[Detected]) -> Vec<String> {
    let mut seq = std::collections::HashMap::<u32, u32>::new();
    detections
        .iter()
        .map(|d| {
            let n = seq.entry(d.lane).or_insert(0);
            let id = format!("vision_{stamp_ms}_{}_{}", d.lane, *n);
            *n += 1;
            id
        })
        .collect()
}

/// The object's UUID: a name-based (v5) UUID of the camera and the vision
/// id, so a replay of the same frames mints the same ids.
pub fn object_uuid(camera: &str, vision_id: &str) -> uuid::Uuid {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7c1e_5a0b_6f1d_4c2e_9b7a_2d3e_4f5a_6b7c);
    uuid::Uuid::new_v5(&NAMESPACE, format!("{camera}/{vision_id}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(hue: f64) -> ClassSpec {
        ClassSpec {
            name: "c".into(),
            shape: Shape::Box,
            hue_deg: hue,
            hue_tolerance_deg: 10.0,
            saturation_min: 100,
            value_min: 60,
            length_m: 0.05,
            width_m: 0.05,
        }
    }

    #[test]
    fn a_hue_window_across_zero_is_two_ranges() {
        assert_eq!(class(0.0).hue_ranges(), vec![(175, 179), (0, 5)]);
        assert_eq!(class(120.0).hue_ranges(), vec![(55, 65)]);
    }

    #[test]
    fn lanes_split_the_width_evenly_and_clamp_at_the_edges() {
        assert_eq!(lane_of(0.0, 0.6, 4), 0);
        assert_eq!(lane_of(0.1499, 0.6, 4), 0);
        assert_eq!(lane_of(0.15, 0.6, 4), 1);
        assert_eq!(lane_of(0.59, 0.6, 4), 3);
        assert_eq!(lane_of(-0.01, 0.6, 4), 0);
        assert_eq!(lane_of(0.7, 0.6, 4), 3);
    }

    #[test]
    fn vision_ids_count_per_lane_and_uuids_follow_them() {
        let d = |lane| Detected {
            class: 0,
            x_m: 0.0,
            y_m: 0.0,
            size_x_m: 0.0,
            size_y_m: 0.0,
            yaw_rad: 0.0,
            lane,
            confidence: 1.0,
            bbox_px: [0; 4],
            centre_px: (0.0, 0.0),
        };
        let ids = vision_ids(1234, &[d(0), d(0), d(2)]);
        assert_eq!(
            ids,
            ["vision_1234_0_0", "vision_1234_0_1", "vision_1234_2_0"]
        );
        assert_eq!(object_uuid("cam", &ids[0]), object_uuid("cam", &ids[0]));
        assert_ne!(object_uuid("cam", &ids[0]), object_uuid("cam", &ids[1]));
        assert_ne!(object_uuid("cam", &ids[0]), object_uuid("cam2", &ids[0]));
        assert_eq!(object_uuid("cam", &ids[0]).get_version_num(), 5);
    }

    #[test]
    fn the_table_agrees_with_opencv_hsv_and_in_range() {
        let classes = vec![class(0.0), class(120.0)];
        let table = colour_table(&classes).unwrap();
        // A sample of colours through cvtColor and inRange, as a Python peer would.
        let mut colours = Vec::new();
        let mut x: u32 = 12345;
        for _ in 0..20000 {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            colours.extend_from_slice(&[(x >> 8) as u8, (x >> 16) as u8, (x >> 24) as u8]);
        }
        let img = Mat::new_rows_cols_with_data(1, colours.len() as i32, &colours).unwrap();
        let img = img.reshape(3, 1).unwrap();
        let mut hsv = Mat::default();
        imgproc::cvt_color_def(&img, &mut hsv, imgproc::COLOR_BGR2HSV).unwrap();
        for (k, c) in classes.iter().enumerate() {
            let mut mask = Mat::default();
            let mut any =
                Mat::new_rows_cols_with_default(1, 20000, CV_8UC1, Scalar::all(0.0)).unwrap();
            for (lo, hi) in c.hue_ranges() {
                core::in_range(
                    &hsv,
                    &Scalar::new(lo as f64, c.saturation_min as f64, c.value_min as f64, 0.0),
                    &Scalar::new(hi as f64, 255.0, 255.0, 0.0),
                    &mut mask,
                )
                .unwrap();
                let mut or = Mat::default();
                core::bitwise_or_def(&any, &mask, &mut or).unwrap();
                any = or;
            }
            let got = any.data_bytes().unwrap();
            let mut hits = 0;
            for (i, px) in colours.chunks_exact(3).enumerate() {
                let idx = ((px[0] as usize) << 16) | ((px[1] as usize) << 8) | px[2] as usize;
                assert_eq!(table[idx] == k as u8 + 1, got[i] == 255, "colour {px:?}");
                hits += (got[i] == 255) as usize;
            }
            assert!(hits > 50, "class {k}: only {hits} sample colours in range");
        }
    }

    /// Overlapping windows: the first class listed wins; more than eight
    /// classes (the table is built eight at a time): each still labelled.
    /// The reference is each sample colour's own cvtColor and
    /// `ClassSpec::accepts`, colour by colour.
    #[test]
    fn overlapping_classes_go_to_the_first_and_a_ninth_class_is_labelled() {
        let mut classes: Vec<ClassSpec> = (0..10).map(|k| class(k as f64 * 36.0)).collect();
        classes[1].hue_tolerance_deg = 30.0; // overlaps classes 0 and 2
        classes[2].saturation_min = 20;
        classes[9].value_min = 0;
        let table = colour_table(&classes).unwrap();
        let mut x: u32 = 777;
        let mut seen = vec![0usize; classes.len() + 1];
        for n in 0..60000 {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let px = if n < 8 {
                // The corners of the cube: the index's byte order.
                [
                    (n & 1) as u8 * 255,
                    (n >> 1 & 1) as u8 * 255,
                    (n >> 2) as u8 * 255,
                ]
            } else {
                [(x >> 8) as u8, (x >> 16) as u8, (x >> 24) as u8]
            };
            let one = Mat::new_rows_cols_with_data(1, 3, &px).unwrap();
            let one = one.reshape(3, 1).unwrap();
            let mut hsv = Mat::default();
            imgproc::cvt_color_def(&one, &mut hsv, imgproc::COLOR_BGR2HSV).unwrap();
            let h = hsv.data_bytes().unwrap();
            let want = classes
                .iter()
                .position(|c| c.accepts([h[0], h[1], h[2]]))
                .map_or(0, |k| k as u8 + 1);
            let idx = ((px[0] as usize) << 16) | ((px[1] as usize) << 8) | px[2] as usize;
            assert_eq!(table[idx], want, "colour {px:?} (hsv {:?})", &h[..3]);
            seen[want as usize] += 1;
        }
        // Every class has colours of its own, class 0 too (class 1 overlaps it).
        for (k, n) in seen.iter().enumerate().skip(1) {
            assert!(
                *n > 20,
                "class {}: only {n} sample colours: {seen:?}",
                k - 1
            );
        }
    }
}
