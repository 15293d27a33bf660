//! Helpers the integration tests share (each test binary uses some).
#![allow(dead_code)]

use cncpick::sim::cell::SimCore;
use cncpick::sim::render::Renderer;
use std::path::PathBuf;

/// A fresh, empty directory for test `tag` of suite `suite` (per process).
pub fn temp_dir(suite: &str, tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cncpick-{suite}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The camera of `core`'s cell.
pub fn renderer(core: &SimCore) -> Renderer {
    Renderer::for_config(&core.cfg).unwrap()
}
