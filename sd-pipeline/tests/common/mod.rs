//! What the end-to-end tests share: fixture paths and the 8-bit image comparison.
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sd_pipeline::image_crate::RgbImage;

/// A file or model folder under `fixtures/pipeline/` (tools/fixtures/pipeline.py, merge.py).
pub fn pipeline_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/pipeline")
        .join(name)
}

/// A file under `fixtures/checkpoint/` (tools/fixtures/checkpoint.py).
pub fn checkpoint_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/checkpoint")
        .join(name)
}

/// The largest per-channel difference between two images of one size, in 8-bit levels.
pub fn max_difference(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}
