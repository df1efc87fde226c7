//! PNG files with A1111's `parameters` text chunk, written whole under a temporary name and then
//! renamed into place.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sd_pipeline::image_crate::RgbImage;

use crate::output_path;
use crate::temp_path::TempSibling;

/// The output names of a batch: `OUT.png` for one image, `OUT-0.png`, `OUT-1.png`, ... for more.
pub fn batch_paths(out: &Path, count: usize) -> Vec<PathBuf> {
    if count == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    (0..count)
        .map(|i| out.with_file_name(format!("{stem}-{i}.{ext}")))
        .collect()
}

/// Writes one PNG (see [`sd_pipeline::png::write_png`]) to standard output, whole: it is
/// encoded in memory first.
pub fn write_stdout(image: &RgbImage, parameters: &str) -> Result<()> {
    let bytes = sd_pipeline::png::encode_png(image, parameters)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&bytes)
        .and_then(|()| stdout.flush())
        .context("-o -: cannot write the image to standard output")
}

fn write_png(path: &Path, image: &RgbImage, parameters: &str) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut sink = BufWriter::new(file);
    sd_pipeline::png::write_png(&mut sink, image, parameters)?;
    sink.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes every `(path, image, parameters)` to a temporary sibling first, and renames them into
/// place only when all are written: an error leaves no output, complete or partial. Each
/// target is checked again just before (see [`output_path`]): replaced only when `force`.
pub fn write_all(outputs: &[(PathBuf, &RgbImage, String)], force: bool) -> Result<()> {
    for (path, _, _) in outputs {
        output_path::check_replaceable("-o", path, force)?;
    }
    let mut written = Vec::with_capacity(outputs.len());
    for (path, image, parameters) in outputs {
        let tmp = TempSibling::new(path, "png");
        write_png(tmp.path(), image, parameters)
            .with_context(|| format!("-o {}: cannot write the image", path.display()))?;
        written.push((tmp, path));
    }
    for (tmp, path) in &written {
        std::fs::rename(tmp.path(), path).with_context(|| {
            format!(
                "-o {}: cannot rename the written image to it",
                path.display()
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_names() {
        assert_eq!(
            batch_paths(Path::new("a/cat.png"), 1),
            [PathBuf::from("a/cat.png")]
        );
        assert_eq!(
            batch_paths(Path::new("a/cat.png"), 2),
            [PathBuf::from("a/cat-0.png"), PathBuf::from("a/cat-1.png")]
        );
        assert_eq!(
            batch_paths(Path::new("cat"), 2)[1],
            PathBuf::from("cat-1.png")
        );
    }
}
