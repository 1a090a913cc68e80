//! Crash-safe file writes: a file is written under a temporary name beside it, synced, then
//! renamed over the target, so a crash or a full disk leaves the previous file intact.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temporary file in the same directory, `fsync`,
/// `rename`, then `fsync` of the directory). On any error the target is untouched and the
/// temporary file removed; the error names `op` and the path. A target that exists and is
/// neither a file nor a directory (`/dev/null`, a pipe) is written in place: renaming over it
/// would replace the device.
pub fn write_atomic(op: &'static str, path: &Path, bytes: &[u8]) -> Result<()> {
    if let Ok(m) = std::fs::metadata(path)
        && !m.is_file()
        && !m.is_dir()
    {
        return std::fs::write(path, bytes).map_err(|e| Error::io(op, path, e));
    }
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(op, format!("{} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(op, path, e));
    }
    // The rename is durable once the directory is synced (best effort where it cannot be).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rewind-atomic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temporary_behind() {
        let d = scratch_dir("replace");
        let p = d.join("w.bin");
        write_atomic("save", &p, b"first").unwrap();
        write_atomic("save", &p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("w.bin")]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file_and_names_the_path() {
        let d = scratch_dir("fail");
        let p = d.join("w.bin");
        write_atomic("save", &p, b"good").unwrap();
        // A directory where the file should go: the rename fails after the data was written.
        let blocked = d.join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"keep the directory non-empty").unwrap();
        let err = write_atomic("save", &blocked, b"new").unwrap_err();
        assert!(err.to_string().starts_with("save: "), "{err}");
        assert!(err.to_string().contains("blocked"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"good");
        let leftovers = std::fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        assert_eq!(leftovers, 0);
        let missing = d.join("no-such-dir").join("w.bin");
        assert!(write_atomic("save", &missing, b"x").is_err());
        // A device stays a device.
        write_atomic("save", Path::new("/dev/null"), b"x").unwrap();
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
