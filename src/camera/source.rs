//! Captured sources: a video file or a V4L2 device through OpenCV's
//! VideoCapture. Opening reads the first frame, so a file that is missing,
//! corrupt or in a pixel format the pipeline cannot take is refused at
//! configure time with the source named, not found later mid-stream.

use super::core::SourceSpec;
use opencv::core::{Mat, CV_8UC3};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};

/// What the params ask of a captured source (0: whatever it gives).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Wanted {
    pub fps: f64,
    pub width_px: u32,
    pub height_px: u32,
    /// Manual exposure, s (0: automatic). Devices only.
    pub exposure_s: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    #[error("{camera}: cannot open: {why}")]
    Open { camera: String, why: String },
    #[error("{camera}: frames are {got}; the camera publishes 8-bit BGR (bgr8)")]
    PixelFormat { camera: String, got: String },
    #[error(
        "{camera}: frames are {got_w}×{got_h} px but width_px × height_px say {want_w}×{want_h}"
    )]
    Size {
        camera: String,
        got_w: i32,
        got_h: i32,
        want_w: u32,
        want_h: u32,
    },
    #[error("{camera}: {why}")]
    Read { camera: String, why: String },
    #[error("{camera}: end of the video")]
    Ended { camera: String },
}

/// Checks one frame against the format and the size wanted.
pub fn check_frame(source: &str, m: &Mat, want: &Wanted) -> Result<(), SourceError> {
    if m.typ() != CV_8UC3 {
        return Err(SourceError::PixelFormat {
            camera: source.into(),
            got: format!(
                "OpenCV type {} ({} channel(s), depth {})",
                m.typ(),
                m.channels(),
                m.depth()
            ),
        });
    }
    let (w, h) = (m.cols(), m.rows());
    if (want.width_px > 0 && w != want.width_px as i32)
        || (want.height_px > 0 && h != want.height_px as i32)
    {
        return Err(SourceError::Size {
            camera: source.into(),
            got_w: w,
            got_h: h,
            want_w: want.width_px,
            want_h: want.height_px,
        });
    }
    Ok(())
}

pub struct Capture {
    name: String,
    cap: VideoCapture,
    is_file: bool,
    looping: bool,
    want: Wanted,
    pending: Option<Mat>,
    /// The rate frames come at: the params' fps, else the source's own.
    pub fps: f64,
    /// Times a file wrapped around to its start.
    pub loops: u64,
}

impl Capture {
    /// Opens a file or device source and reads its first frame.
    pub fn open(spec: &SourceSpec, want: Wanted, looping: bool) -> Result<Capture, SourceError> {
        let name = spec.to_string();
        let open_err = |why: String| SourceError::Open {
            camera: name.clone(),
            why,
        };
        let (path, backend, is_file) = match spec {
            SourceSpec::File(p) => (p, videoio::CAP_ANY, true),
            SourceSpec::V4l2(p) => (p, videoio::CAP_V4L2, false),
            SourceSpec::Sim => return Err(open_err("sim frames are not captured".into())),
        };
        match std::fs::metadata(path) {
            Err(e) => return Err(open_err(e.to_string())),
            Ok(m) if is_file && !m.is_file() => return Err(open_err("not a regular file".into())),
            Ok(_) => {}
        }
        let path_str = path
            .to_str()
            .ok_or_else(|| open_err("the path is not UTF-8".into()))?;
        let mut cap = VideoCapture::default().map_err(|e| open_err(e.to_string()))?;
        let opened = cap
            .open_file(path_str, backend)
            .map_err(|e| open_err(e.to_string()))?;
        if !opened || !cap.is_opened().unwrap_or(false) {
            return Err(open_err(if is_file {
                "OpenCV cannot decode it (not a video, corrupt, or a codec this OpenCV lacks)"
                    .into()
            } else {
                "OpenCV's V4L2 backend cannot open it (not a capture device, busy, or no permission)"
                    .into()
            }));
        }
        if !is_file {
            // Requests; the device may settle on something else, which the
            // first frame's check catches.
            let set = |cap: &mut VideoCapture, prop: i32, v: f64| {
                if v > 0.0 {
                    let _ = cap.set(prop, v);
                }
            };
            set(
                &mut cap,
                videoio::CAP_PROP_FRAME_WIDTH,
                want.width_px as f64,
            );
            set(
                &mut cap,
                videoio::CAP_PROP_FRAME_HEIGHT,
                want.height_px as f64,
            );
            set(&mut cap, videoio::CAP_PROP_FPS, want.fps);
            if want.exposure_s > 0.0 {
                // V4L2: manual mode is 1; exposure_absolute is in 100 µs units.
                let _ = cap.set(videoio::CAP_PROP_AUTO_EXPOSURE, 1.0);
                let _ = cap.set(videoio::CAP_PROP_EXPOSURE, want.exposure_s * 1e4);
            }
        }
        let own_fps = cap.get(videoio::CAP_PROP_FPS).unwrap_or(0.0);
        let fps = if want.fps > 0.0 {
            want.fps
        } else if own_fps.is_finite() && own_fps > 0.0 {
            own_fps
        } else {
            30.0
        };
        let mut c = Capture {
            name,
            cap,
            is_file,
            looping,
            want,
            pending: None,
            fps,
            loops: 0,
        };
        let first = c.grab().map_err(|e| match e {
            SourceError::Ended { .. } => SourceError::Open {
                camera: c.name.clone(),
                why: "no frame could be decoded (empty or corrupt)".into(),
            },
            other => other,
        })?;
        c.pending = Some(first);
        Ok(c)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn grab(&mut self) -> Result<Mat, SourceError> {
        let mut m = Mat::default();
        let ok = self.cap.read(&mut m).map_err(|e| SourceError::Read {
            camera: self.name.clone(),
            why: e.to_string(),
        })?;
        if !ok || m.empty() {
            return Err(if self.is_file {
                SourceError::Ended {
                    camera: self.name.clone(),
                }
            } else {
                SourceError::Read {
                    camera: self.name.clone(),
                    why: "the device stopped giving frames (unplugged?)".into(),
                }
            });
        }
        check_frame(&self.name, &m, &self.want)?;
        Ok(m)
    }

    /// The next frame. A looping file starts again at its end.
    pub fn read(&mut self) -> Result<Mat, SourceError> {
        if let Some(m) = self.pending.take() {
            return Ok(m);
        }
        match self.grab() {
            Err(SourceError::Ended { .. }) if self.looping => {
                let rewound = self
                    .cap
                    .set(videoio::CAP_PROP_POS_FRAMES, 0.0)
                    .unwrap_or(false);
                if !rewound {
                    return Err(SourceError::Read {
                        camera: self.name.clone(),
                        why: "cannot rewind to loop".into(),
                    });
                }
                self.loops += 1;
                self.grab()
            }
            other => other,
        }
    }
}
