//! Whether a command may put a file at an output path. One rule for every command that writes
//! (`generate`, `merge`):
//!
//! - a path that does not exist is written (whole, under a temporary name, then renamed);
//! - an existing regular file is replaced only with `--force`, and never when it is read-only
//!   (even for root, who could);
//! - a symbolic link, FIFO, device or socket is refused: renaming over it would silently turn
//!   it into a regular file (`-o /dev/stdout` as root would destroy the device node). The PNG
//!   goes to standard output with `-o -`.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Refuses `path` (named as `flag path` in messages) unless a regular file may be put there,
/// following the rule above. Folders are left to the caller (what a folder means differs).
pub fn check_replaceable(flag: &str, path: &Path, force: bool) -> Result<()> {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("{flag} {shown}: cannot read it")),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        bail!("{flag} {shown}: is a symbolic link; not replacing it (give the file it points to)");
    }
    if kind.is_dir() {
        return Ok(());
    }
    if let Some(special) = special_kind(&kind) {
        bail!(
            "{flag} {shown}: is a {special}, not a regular file; not writing to it \
             (`-o -` writes a PNG to standard output)"
        );
    }
    if meta.permissions().readonly() {
        bail!("{flag} {shown}: is read-only; not replacing it");
    }
    if !force {
        bail!("{flag} {shown}: already exists (--force replaces it)");
    }
    Ok(())
}

#[cfg(unix)]
fn special_kind(kind: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        Some("FIFO")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("device")
    } else if kind.is_socket() {
        Some("socket")
    } else {
        None
    }
}

#[cfg(not(unix))]
fn special_kind(kind: &std::fs::FileType) -> Option<&'static str> {
    (!kind.is_file()).then_some("special file")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sd-output-path-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn refused(path: &Path, force: bool) -> String {
        format!("{:#}", check_replaceable("-o", path, force).unwrap_err())
    }

    #[test]
    fn new_paths_pass_and_existing_files_need_force() {
        let d = dir("plain");
        let p = d.join("a.png");
        check_replaceable("-o", &p, false).unwrap();
        std::fs::write(&p, b"x").unwrap();
        assert!(refused(&p, false).contains("already exists (--force replaces it)"));
        check_replaceable("-o", &p, true).unwrap();
    }

    #[test]
    fn read_only_files_are_never_replaced() {
        let d = dir("readonly");
        let p = d.join("a.png");
        std::fs::write(&p, b"x").unwrap();
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(&p, perm).unwrap();
        assert!(refused(&p, true).contains("is read-only"));
    }

    #[cfg(unix)]
    #[test]
    fn links_fifos_and_devices_are_refused() {
        let d = dir("special");
        let target = d.join("t.png");
        std::fs::write(&target, b"x").unwrap();
        let link = d.join("l.png");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(refused(&link, true).contains("is a symbolic link"));
        let fifo = d.join("f.png");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = refused(&fifo, true);
            assert!(e.contains("is a FIFO") && e.contains("-o -"), "{e}");
        }
        assert!(refused(Path::new("/dev/null"), true).contains("is a device"));
    }
}
