//! Content-addressed objects on disk: `<data dir>/media/objects/<sha256 hex>`, written under
//! `media/tmp/` first.
//!
//! Protocol of one upload, and why a crash at any point is safe:
//! 1. Bytes go to `tmp/<sha>.<n>` as they arrive (never the whole object in memory). A crash
//!    leaves a temp file, which no URL names; [`Store::open`] deletes every temp file at start.
//! 2. Size and SHA-256 checked, then the file is fsynced, linked as `objects/<sha>` (a hard
//!    link: it fails if another upload of the same bytes got there first), the temp name
//!    removed, and the `objects` directory fsynced; only then is the upload answered 201. A
//!    crash before the link leaves a temp file (step 1); after it and before the directory
//!    sync, the object may or may not exist after restart, but it was never acknowledged. An
//!    object that exists was fully written and synced before its name did, so it is never
//!    partial.
//!
//! Blocking file calls run here on the media thread (writes go to the page cache) or in the
//! runtime's blocking pool (fsync, scans); never on a shard thread.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The media directory inside the data directory.
pub const MEDIA_DIR: &str = "media";

/// Where objects live.
#[derive(Debug, Clone)]
pub struct Store {
    objects: PathBuf,
    tmp: PathBuf,
}

/// A stored object found by a scan.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// Its size.
    pub bytes: u64,
    /// Its age (ms) at the scan.
    pub age_ms: u64,
}

impl Store {
    /// The store under `media_dir`: makes its folders, deletes leftover temp files.
    pub fn open(media_dir: &Path) -> std::io::Result<Store> {
        let store = Store {
            objects: media_dir.join("objects"),
            tmp: media_dir.join("tmp"),
        };
        std::fs::create_dir_all(&store.objects)?;
        std::fs::create_dir_all(&store.tmp)?;
        for e in std::fs::read_dir(&store.tmp)? {
            std::fs::remove_file(e?.path())?;
        }
        std::fs::File::open(media_dir)?.sync_all()?;
        Ok(store)
    }

    /// Where object `sha_hex` lives (the name is 64 hex digits, checked by the caller).
    pub fn object_path(&self, sha_hex: &str) -> PathBuf {
        self.objects.join(sha_hex)
    }

    /// A new temp file for an upload of `sha_hex`; `n` makes its name unique.
    pub fn temp(&self, sha_hex: &str, n: u64) -> std::io::Result<(PathBuf, std::fs::File)> {
        let path = self.tmp.join(format!("{sha_hex}.{n}"));
        let file = std::fs::File::create(&path)?;
        Ok((path, file))
    }

    /// Step 2 of the protocol for a fully checked temp file (blocking: fsyncs). The object's
    /// name is made by a hard link, which fails if it exists (the same bytes committed by
    /// another upload meanwhile): `Ok(false)`, and the temp file goes either way.
    pub fn commit(
        &self,
        mut file: std::fs::File,
        temp: &Path,
        sha_hex: &str,
    ) -> std::io::Result<bool> {
        file.flush()?;
        file.sync_all()?;
        drop(file);
        let linked = match std::fs::hard_link(temp, self.object_path(sha_hex)) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        std::fs::remove_file(temp)?;
        std::fs::File::open(&self.objects)?.sync_all()?;
        Ok(linked)
    }

    /// Marks object `sha_hex` as uploaded now (its retention starts again): an upload of an
    /// object already stored, for a new message, must not find it deleted days early.
    pub fn touch(&self, sha_hex: &str) -> std::io::Result<()> {
        std::fs::File::options()
            .write(true)
            .open(self.object_path(sha_hex))?
            .set_modified(std::time::SystemTime::now())
    }

    /// Every stored object (blocking: reads the directory).
    pub fn scan(&self) -> std::io::Result<Vec<(PathBuf, Found)>> {
        let now = std::time::SystemTime::now();
        let mut found = Vec::new();
        for e in std::fs::read_dir(&self.objects)? {
            let e = e?;
            let meta = e.metadata()?;
            let age_ms = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .map_or(0, |d| d.as_millis() as u64);
            found.push((
                e.path(),
                Found {
                    bytes: meta.len(),
                    age_ms,
                },
            ));
        }
        Ok(found)
    }
}

/// Whether `s` is 64 lowercase hex digits (an object name).
pub fn is_object_name(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_temp_files_go_at_open_and_commits_become_objects() {
        let dir = testkit::temp_dir("media-store");
        let store = Store::open(&dir).unwrap();
        let name = "ab".repeat(32);
        let (path, mut f) = store.temp(&name, 1).unwrap();
        f.write_all(b"half").unwrap();
        drop(f);
        let store = Store::open(&dir).unwrap();
        assert!(!path.exists(), "a crash's temp file is deleted at start");
        assert!(store.scan().unwrap().is_empty());
        let (path, mut f) = store.temp(&name, 2).unwrap();
        f.write_all(b"whole").unwrap();
        assert!(store.commit(f, &path, &name).unwrap(), "a new object");
        let (again, mut f) = store.temp(&name, 3).unwrap();
        f.write_all(b"whole").unwrap();
        assert!(!store.commit(f, &again, &name).unwrap(), "stored meanwhile");
        assert!(!again.exists() && !path.exists(), "no temp file left");
        store.touch(&name).unwrap();
        let found = store.scan().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.bytes, 5);
        assert!(is_object_name(&name));
        assert!(!is_object_name("AB"));
        assert!(!is_object_name(&"../".repeat(21)));
    }
}
