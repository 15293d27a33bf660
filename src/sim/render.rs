//! The camera renderer: frames of the camera's view of the belt, drawn with
//! OpenCV, with pixel noise, blur, lighting drift and gantry beams in front
//! of the objects. Everything random comes from the seed and the frame
//! number, so a frame is the same bytes every time.

use super::params::{CameraSpec, ObjectClass, Shape};
use super::rng::derive;
use nalgebra::{Matrix3, Vector3};
use opencv::core::{self, Mat, Point, Scalar, Size, CV_16SC3, CV_8U, CV_8UC3};
use opencv::imgproc;
use opencv::prelude::*;

/// Sub-pixel bits for drawing (OpenCV's `shift`).
const SHIFT: i32 = 8;
const ONE: f64 = (1 << SHIFT) as f64;

const BELT_BGR: [f64; 3] = [72.0, 70.0, 68.0];
const FLOOR_BGR: [f64; 3] = [28.0, 30.0, 32.0];
const BEAM_BGR: [f64; 3] = [110.0, 105.0, 100.0];

/// The camera's mapping between the belt plane and pixels. Pixel centres
/// are at whole coordinates (OpenCV's convention), so pixel (0, 0) covers
/// belt [x_min, x_min + m_per_px) × [y_min, y_min + m_per_px).
#[derive(Debug, Clone, PartialEq)]
pub struct CameraGeometry {
    /// Belt (x, y, 1) → pixel (u, v, w).
    pub belt_to_px: Matrix3<f64>,
    pub px_to_belt: Matrix3<f64>,
}

impl CameraGeometry {
    pub fn new(c: &CameraSpec) -> Self {
        let s = 1.0 / c.m_per_px;
        let belt_to_px = Matrix3::new(
            s,
            0.0,
            -c.x_min_m * s - 0.5,
            0.0,
            s,
            -c.y_min_m * s - 0.5,
            0.0,
            0.0,
            1.0,
        );
        let px_to_belt = belt_to_px.try_inverse().expect("a scale is invertible");
        CameraGeometry {
            belt_to_px,
            px_to_belt,
        }
    }

    fn apply(m: &Matrix3<f64>, a: f64, b: f64) -> (f64, f64) {
        let p = m * Vector3::new(a, b, 1.0);
        (p.x / p.z, p.y / p.z)
    }

    pub fn pixel_of(&self, x_m: f64, y_m: f64) -> (f64, f64) {
        Self::apply(&self.belt_to_px, x_m, y_m)
    }

    pub fn belt_of(&self, u_px: f64, v_px: f64) -> (f64, f64) {
        Self::apply(&self.px_to_belt, u_px, v_px)
    }
}

/// An object to draw: its class, its centre on the belt and its yaw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drawn {
    pub class: usize,
    pub x_m: f64,
    pub y_m: f64,
    pub yaw_rad: f64,
}

pub struct Renderer {
    spec: CameraSpec,
    classes: Vec<ObjectClass>,
    seed: u64,
    pub geometry: CameraGeometry,
    background: Mat,
    /// Gaussian noise fields, a margin larger than the frame; each frame
    /// takes a window at an offset drawn from the seed and the frame number.
    noise_bank: Vec<Mat>,
    /// The empty belt with the beams, blurred with `still_sigma` (as is
    /// when 0).
    still: Mat,
    still_sigma: Option<f64>,
    /// The frame being drawn, sharp (kept between frames).
    canvas: Mat,
    /// The next frame, finished where no object is ([`Renderer::prepare`]).
    ahead: Option<Ahead>,
    /// The next frame, finished with the objects expected on it
    /// ([`Renderer::render_ahead`]).
    whole_ahead: Option<WholeAhead>,
    /// Frames [`Renderer::render`] took whole from [`Renderer::render_ahead`].
    used_ahead: u64,
}

/// A frame rendered ahead in full: what for, the objects it shows (those
/// on the frame, in order) and its picture.
struct WholeAhead {
    key: [u64; 6],
    shown: Vec<Drawn>,
    image: Mat,
}

/// A frame prepared ahead: what for ([`Renderer::key`]) and its picture.
struct Ahead {
    key: [u64; 6],
    image: Mat,
}

/// Noise fields in the bank, and the margin each frame's window moves in.
const NOISE_FIELDS: u64 = 3;
const NOISE_MARGIN_PX: i32 = 97;
/// The noise fields are 8-bit, offset by this (so clipped at -128 and +127
/// grey levels, far beyond any noise the params allow to matter).
const NOISE_OFFSET: f64 = 128.0;

fn scalar(bgr: [f64; 3], gain: f64) -> Scalar {
    Scalar::new(bgr[0] * gain, bgr[1] * gain, bgr[2] * gain, 0.0)
}

fn fixed(u: f64, v: f64) -> Point {
    Point::new((u * ONE).round() as i32, (v * ONE).round() as i32)
}

impl Renderer {
    /// The camera of simulated cell `cfg`.
    pub fn for_config(cfg: &super::params::SimConfig) -> opencv::Result<Self> {
        Renderer::new(
            cfg.camera.clone(),
            cfg.classes.clone(),
            (cfg.belt_length_m, cfg.belt_width_m),
            cfg.seed,
        )
    }

    pub fn new(
        spec: CameraSpec,
        classes: Vec<ObjectClass>,
        belt_m: (f64, f64),
        seed: u64,
    ) -> opencv::Result<Self> {
        let geometry = CameraGeometry::new(&spec);
        let (w, h) = (spec.width_px as i32, spec.height_px as i32);
        let mut background =
            Mat::new_rows_cols_with_default(h, w, CV_8UC3, scalar(FLOOR_BGR, 1.0))?;
        // The belt, [0, length] × [0, width]: the rest is the floor.
        let (u0, v0) = geometry.pixel_of(0.0, 0.0);
        let (u1, v1) = geometry.pixel_of(belt_m.0, belt_m.1);
        let belt = [fixed(u0, v0), fixed(u1, v0), fixed(u1, v1), fixed(u0, v1)];
        imgproc::fill_convex_poly(
            &mut background,
            &core::Vector::<Point>::from_iter(belt),
            scalar(BELT_BGR, 1.0),
            imgproc::LINE_AA,
            SHIFT,
        )?;
        Ok(Renderer {
            spec,
            classes,
            seed,
            geometry,
            background,
            noise_bank: Vec::new(),
            still: Mat::default(),
            still_sigma: None,
            canvas: Mat::default(),
            ahead: None,
            whole_ahead: None,
            used_ahead: 0,
        })
    }

    /// Frame `frame`'s noise: a window of one of the bank's fields.
    fn noise_for(
        &mut self,
        frame: u64,
        cols: i32,
        rows: i32,
    ) -> opencv::Result<(usize, core::Rect)> {
        let (bw, bh) = (cols + NOISE_MARGIN_PX, rows + NOISE_MARGIN_PX);
        if self
            .noise_bank
            .first()
            .is_none_or(|m| m.cols() != bw || m.rows() != bh)
        {
            self.noise_bank.clear();
            for i in 0..NOISE_FIELDS {
                let mut field =
                    Mat::new_rows_cols_with_default(bh, bw, CV_16SC3, Scalar::all(0.0))?;
                let mut rng = core::RNG::new(derive(self.seed, "noise", i) | 1)?;
                rng.fill(
                    &mut field,
                    core::RNG_NORMAL,
                    &Scalar::all(0.0),
                    &Scalar::all(self.spec.noise_stddev),
                    false,
                )?;
                let mut offset = Mat::default();
                field.convert_to(&mut offset, CV_8U, 1.0, NOISE_OFFSET)?;
                self.noise_bank.push(offset);
            }
        }
        let pick = derive(self.seed, "noise-window", frame);
        let m = NOISE_MARGIN_PX as u64;
        let dx = ((pick / NOISE_FIELDS) % m) as i32;
        let dy = ((pick / NOISE_FIELDS / m) % m) as i32;
        Ok((
            (pick % NOISE_FIELDS) as usize,
            core::Rect::new(dx, dy, cols, rows),
        ))
    }

    /// Changes the effects a running camera may change (noise, blur, lighting).
    pub fn set_effects(
        &mut self,
        noise_stddev: f64,
        blur_sigma_px: f64,
        lighting_fraction: f64,
        lighting_period_s: f64,
    ) {
        if noise_stddev != self.spec.noise_stddev {
            self.noise_bank.clear();
        }
        self.spec.noise_stddev = noise_stddev;
        self.spec.blur_sigma_px = blur_sigma_px;
        self.spec.lighting_drift_fraction = lighting_fraction;
        self.spec.lighting_drift_period_s = lighting_period_s;
    }

    pub fn spec(&self) -> &CameraSpec {
        &self.spec
    }

    /// Brightness gain at `t_s`: a slow swing with a phase from the seed.
    pub fn lighting_gain(&self, t_s: f64) -> f64 {
        let phase = (derive(self.seed, "lighting", 0) % 6283) as f64 / 1000.0;
        1.0 + self.spec.lighting_drift_fraction
            * (std::f64::consts::TAU * t_s / self.spec.lighting_drift_period_s + phase).sin()
    }

    /// Does, for frame number `frame` exposed at `t_s`, the work that does
    /// not depend on where the objects are: the empty belt with the beams,
    /// blurred, lit and noised as that frame will be, and the sharp canvas
    /// reset to the empty belt. [`Renderer::render`] then draws only around
    /// the objects. A camera loop calls it while waiting for the exposure,
    /// so that this work is not between the exposure and the frame; if it
    /// was not called, or for another frame or other effects,
    /// [`Renderer::render`] does it itself.
    pub fn prepare(&mut self, frame: u64, t_s: f64) -> opencv::Result<()> {
        self.ahead = Some(self.finished_empty(frame, t_s)?);
        Ok(())
    }

    /// Renders frame `frame`, exposed at `t_s`, with `objects` as they are
    /// expected to be then (the world's objects now, moved with the belt),
    /// and keeps it. [`Renderer::render`] hands it out whole if the objects
    /// on the frame are then these, in this order, and the effects the
    /// same: the picture is a function of those alone, so it is the bytes
    /// of drawing it then. Otherwise (an object put on, picked or pushed
    /// in the meantime) it draws the frame itself, as if this had not
    /// been called. A camera loop calls it while waiting for the exposure,
    /// so that no drawing stands between the exposure and the frame, as
    /// none does in a real camera's.
    pub fn render_ahead(&mut self, frame: u64, t_s: f64, objects: &[Drawn]) -> opencv::Result<()> {
        self.whole_ahead = None;
        let key = self.key(frame, t_s);
        let empty = match self.ahead.take() {
            Some(a) if a.key == key => a,
            _ => self.finished_empty(frame, t_s)?,
        };
        // Drawn on a copy: the empty frame stays prepared for a miss.
        self.ahead = Some(Ahead {
            key,
            image: empty.image.try_clone()?,
        });
        let mut image = Mat::default();
        let drawn = self.render(frame, t_s, objects, &mut image);
        // render drew on the canvas: a miss needs it empty again.
        self.background.copy_to(&mut self.canvas)?;
        self.ahead = Some(empty);
        drawn?;
        self.whole_ahead = Some(WholeAhead {
            key,
            shown: self.shown(objects),
            image,
        });
        Ok(())
    }

    /// How many frames [`Renderer::render`] took whole from
    /// [`Renderer::render_ahead`].
    pub fn used_ahead(&self) -> u64 {
        self.used_ahead
    }

    /// The objects of `objects` that the frame shows (any part of them
    /// within it), in order: the only ones its picture depends on.
    fn shown(&self, objects: &[Drawn]) -> Vec<Drawn> {
        objects
            .iter()
            .filter(|o| self.on_frame(o))
            .copied()
            .collect()
    }

    /// Where `o` is on the frame, px, and its half length and half width, px.
    fn extent(&self, o: &Drawn) -> (f64, f64, f64, f64) {
        let c = &self.classes[o.class];
        let (u, v) = self.geometry.pixel_of(o.x_m, o.y_m);
        let s = 1.0 / self.spec.m_per_px;
        (u, v, c.length_m * s / 2.0, c.width_m * s / 2.0)
    }

    /// Whether any part of `o` may be on the frame (with a margin).
    fn on_frame(&self, o: &Drawn) -> bool {
        let (u, v, l, w) = self.extent(o);
        !(u + l + w < -2.0
            || v + l + w < -2.0
            || u - l - w > self.spec.width_px as f64 + 2.0
            || v - l - w > self.spec.height_px as f64 + 2.0)
    }

    /// [`Renderer::prepare`]'s work: the finished empty frame; the canvas
    /// reset to the empty belt.
    fn finished_empty(&mut self, frame: u64, t_s: f64) -> opencv::Result<Ahead> {
        let sigma = self.spec.blur_sigma_px;
        if self.still_sigma != Some(sigma) {
            let mut empty = self.background.try_clone()?;
            self.draw_beams(&mut empty)?;
            self.still = if sigma > 0.0 {
                blur(&empty, sigma)?
            } else {
                empty
            };
            self.still_sigma = Some(sigma);
        }
        let whole = core::Rect::new(0, 0, self.still.cols(), self.still.rows());
        let mut image = Mat::default();
        let still = std::mem::take(&mut self.still);
        let done = self.finish(frame, t_s, &still, whole, &mut image);
        self.still = still;
        done?;
        self.background.copy_to(&mut self.canvas)?;
        Ok(Ahead {
            key: self.key(frame, t_s),
            image,
        })
    }

    /// What a prepared frame was prepared for: the frame, its time and the
    /// effects then.
    fn key(&self, frame: u64, t_s: f64) -> [u64; 6] {
        let s = &self.spec;
        [
            frame,
            t_s.to_bits(),
            s.noise_stddev.to_bits(),
            s.blur_sigma_px.to_bits(),
            s.lighting_drift_fraction.to_bits(),
            s.lighting_drift_period_s.to_bits(),
        ]
    }

    /// Draws frame number `frame`, exposed at `t_s`, into `out` (BGR8).
    ///
    /// The picture is the belt with the objects and then the beams in front,
    /// blurred, lit and noised. Only what lies near an object changes from
    /// frame to frame, so the empty belt is finished beforehand
    /// ([`Renderer::prepare`]) and, per frame, only the pixels around each
    /// object are drawn, blurred, lit and noised again; the result is the
    /// same bytes as doing the whole picture ([`Renderer::render_whole`],
    /// which the tests hold it to).
    pub fn render(
        &mut self,
        frame: u64,
        t_s: f64,
        objects: &[Drawn],
        out: &mut Mat,
    ) -> opencv::Result<()> {
        let key = self.key(frame, t_s);
        if let Some(w) = self.whole_ahead.take() {
            if w.key == key
                && w.shown
                    .iter()
                    .eq(objects.iter().filter(|o| self.on_frame(o)))
            {
                self.used_ahead += 1;
                *out = w.image;
                return Ok(());
            }
        }
        let mut image = match self.ahead.take() {
            Some(a) if a.key == key => a.image,
            _ => self.finished_empty(frame, t_s)?.image,
        };
        // The canvas is the empty belt (prepare reset it).
        let near = self.sharp(objects, false)?;
        let sigma = self.spec.blur_sigma_px;
        // A pixel's blur reads `reach` pixels around it: pixels farther
        // than that from every object keep the empty belt's. Around each
        // object, the pixels that may differ (`changed`) and those they
        // read (`read`; past the frame's edge its edge pixels repeat, as
        // in the blur of a whole frame) go side by side into one image,
        // blurred at once: a patch's neighbour reaches only the margin
        // of it that is thrown away. One blur, not one per object: each
        // call costs far more than its few pixels.
        let reach = if sigma > 0.0 { blur_reach_px(sigma) } else { 0 };
        let whole = core::Rect::new(0, 0, self.canvas.cols(), self.canvas.rows());
        let patches: Vec<(core::Rect, core::Rect)> = near
            .into_iter()
            .map(|r| {
                let changed = grow(r, reach) & whole;
                (changed, grow(changed, reach))
            })
            .collect();
        if patches.is_empty() {
            *out = image;
            return Ok(());
        }
        if sigma <= 0.0 {
            let canvas = std::mem::take(&mut self.canvas);
            let done = patches.iter().try_for_each(|&(changed, _)| {
                self.finish(frame, t_s, &canvas.roi(changed)?, changed, &mut image)
            });
            self.canvas = canvas;
            done?;
            *out = image;
            return Ok(());
        }
        let width = patches.iter().map(|(_, r)| r.width).sum();
        let height = patches.iter().map(|(_, r)| r.height).max().unwrap_or(0);
        let mut side_by_side =
            Mat::new_rows_cols_with_default(height, width, CV_8UC3, Scalar::all(0.0))?;
        let mut x = 0;
        for &(_, read) in &patches {
            let inside = read & whole;
            // A view of the frame: copyMakeBorder takes the real
            // pixels around it and repeats only past the frame.
            core::copy_make_border(
                &self.canvas.roi(inside)?,
                &mut side_by_side.roi_mut(core::Rect::new(x, 0, read.width, read.height))?,
                inside.y - read.y,
                read.y + read.height - inside.y - inside.height,
                inside.x - read.x,
                read.x + read.width - inside.x - inside.width,
                core::BORDER_REPLICATE,
                Scalar::default(),
            )?;
            x += read.width;
        }
        let done = blur(&side_by_side, sigma)?;
        let mut x = 0;
        for &(changed, read) in &patches {
            let inner = core::Rect::new(x + reach, reach, changed.width, changed.height);
            self.finish(frame, t_s, &done.roi(inner)?, changed, &mut image)?;
            x += read.width;
        }
        *out = image;
        Ok(())
    }

    /// [`Renderer::render`] the plain way: the whole picture drawn, blurred,
    /// lit and noised. The reference the fast path is held to.
    pub fn render_whole(
        &mut self,
        frame: u64,
        t_s: f64,
        objects: &[Drawn],
        out: &mut Mat,
    ) -> opencv::Result<()> {
        // The canvas is drawn on: a prepared frame's reset canvas is gone.
        self.ahead = None;
        self.sharp(objects, true)?;
        let sigma = self.spec.blur_sigma_px;
        let picture = if sigma > 0.0 {
            blur(&self.canvas, sigma)?
        } else {
            self.canvas.try_clone()?
        };
        let whole = core::Rect::new(0, 0, picture.cols(), picture.rows());
        let mut image = Mat::default();
        self.finish(frame, t_s, &picture, whole, &mut image)?;
        *out = image;
        Ok(())
    }

    /// Draws the sharp picture into `canvas`: the belt (unless `reset` is
    /// false, the canvas being the empty belt already), the objects, the
    /// beams. Returns the box each drawn object may have touched.
    fn sharp(&mut self, objects: &[Drawn], reset: bool) -> opencv::Result<Vec<core::Rect>> {
        if reset {
            self.background.copy_to(&mut self.canvas)?;
        }
        let (fw, fh) = (self.canvas.cols(), self.canvas.rows());
        let mut near = Vec::with_capacity(objects.len());
        for o in objects {
            if !self.on_frame(o) {
                continue;
            }
            let c = &self.classes[o.class];
            let color = Scalar::new(
                c.color_bgr[0] as f64,
                c.color_bgr[1] as f64,
                c.color_bgr[2] as f64,
                0.0,
            );
            let (u, v, l, w) = self.extent(o);
            let out = &mut self.canvas;
            let (lo, hi) = match c.shape {
                Shape::Disc => {
                    imgproc::circle(
                        out,
                        fixed(u, v),
                        (l * ONE).round() as i32,
                        color,
                        -1,
                        imgproc::LINE_AA,
                        SHIFT,
                    )?;
                    ((u - l, v - l), (u + l, v + l))
                }
                Shape::Box => {
                    let (sn, cs) = o.yaw_rad.sin_cos();
                    let at = |a: f64, b: f64| (u + a * cs - b * sn, v + a * sn + b * cs);
                    let corners = [at(l, w), at(-l, w), at(-l, -w), at(l, -w)];
                    let pts = corners.map(|(x, y)| fixed(x, y));
                    imgproc::fill_convex_poly(
                        out,
                        &core::Vector::<Point>::from_iter(pts),
                        color,
                        imgproc::LINE_AA,
                        SHIFT,
                    )?;
                    let fold = |f: fn(f64, f64) -> f64, i: usize| {
                        corners
                            .iter()
                            .map(|c| if i == 0 { c.0 } else { c.1 })
                            .reduce(f)
                            .unwrap_or(0.0)
                    };
                    (
                        (fold(f64::min, 0), fold(f64::min, 1)),
                        (fold(f64::max, 0), fold(f64::max, 1)),
                    )
                }
            };
            // Anti-aliasing reaches a pixel past the outline; two for margin.
            let x0 = (lo.0.floor() as i32 - 2).max(0);
            let y0 = (lo.1.floor() as i32 - 2).max(0);
            let x1 = (hi.0.ceil() as i32 + 3).min(fw);
            let y1 = (hi.1.ceil() as i32 + 3).min(fh);
            if x1 > x0 && y1 > y0 {
                near.push(core::Rect::new(x0, y0, x1 - x0, y1 - y0));
            }
        }
        let mut canvas = std::mem::take(&mut self.canvas);
        let drawn = self.draw_beams(&mut canvas);
        self.canvas = canvas;
        drawn?;
        Ok(near)
    }

    /// The gantry beams, in front of everything on the belt.
    fn draw_beams(&self, out: &mut Mat) -> opencv::Result<()> {
        let half = self.spec.occluder_width_m / 2.0;
        for &x in &self.spec.occluder_x_m {
            let (u0, _) = self.geometry.pixel_of(x - half, 0.0);
            let (u1, _) = self.geometry.pixel_of(x + half, 0.0);
            let h = self.spec.height_px as f64 + 1.0;
            let pts = [fixed(u0, -1.0), fixed(u1, -1.0), fixed(u1, h), fixed(u0, h)];
            imgproc::fill_convex_poly(
                out,
                &core::Vector::<Point>::from_iter(pts),
                scalar(BEAM_BGR, 1.0),
                imgproc::LINE_AA,
                SHIFT,
            )?;
        }
        Ok(())
    }

    /// Brightness and noise over `src`, the (blurred) picture's pixels at
    /// `at` in the frame, into the same place in `frame_out` (allocated as
    /// a whole frame if it is not one). A gain commutes with a blur, both
    /// being linear; each pixel is worked out on its own, so a region's
    /// bytes are the whole frame's there.
    fn finish(
        &mut self,
        frame: u64,
        t_s: f64,
        src: &(impl MatTraitConst + core::ToInputArray),
        at: core::Rect,
        frame_out: &mut Mat,
    ) -> opencv::Result<()> {
        let gain = self.lighting_gain(t_s);
        let (cols, rows) = (self.background.cols(), self.background.rows());
        if frame_out.cols() != cols || frame_out.rows() != rows || frame_out.typ() != CV_8UC3 {
            *frame_out = Mat::new_rows_cols_with_default(rows, cols, CV_8UC3, Scalar::all(0.0))?;
        }
        let mut dst = frame_out.roi_mut(at)?;
        if self.spec.noise_stddev > 0.0 {
            let (field, window) = self.noise_for(frame, cols, rows)?;
            // The noise is stored offset by 128 in 8 bits: two 8-bit
            // inputs take OpenCV's vectorised path.
            let noise = self.noise_bank[field].roi(core::Rect::new(
                window.x + at.x,
                window.y + at.y,
                at.width,
                at.height,
            ))?;
            core::add_weighted(src, gain, &noise, 1.0, -NOISE_OFFSET, &mut dst, CV_8U)
        } else if gain != 1.0 {
            src.convert_to(&mut dst, -1, gain, 0.0)
        } else {
            src.copy_to(&mut dst)
        }
    }
}

/// The pixels around each pixel that a blur of `sigma` px reads: OpenCV's
/// kernel for 8-bit images is `round(6 sigma + 1) | 1` wide; one more for
/// margin.
fn blur_reach_px(sigma: f64) -> i32 {
    (3.0 * sigma).ceil() as i32 + 1
}

fn blur(src: &Mat, sigma: f64) -> opencv::Result<Mat> {
    let mut out = Mat::default();
    imgproc::gaussian_blur(
        src,
        &mut out,
        Size::new(0, 0),
        sigma,
        sigma,
        core::BORDER_REPLICATE,
    )?;
    Ok(out)
}

fn grow(r: core::Rect, by: i32) -> core::Rect {
    core::Rect::new(r.x - by, r.y - by, r.width + 2 * by, r.height + 2 * by)
}
