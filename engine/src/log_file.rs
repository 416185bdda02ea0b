//! An append-only file written through io_uring: the shard's durable log.
//!
//! `append_sync` writes a batch at the end of the file and `fdatasync`s it before it
//! returns, so a caller that acknowledges after it returns never acknowledges what a crash
//! could lose. Group commit is the caller's: while one `append_sync` is in flight, the
//! caller gathers the next batch. `replace_with` atomically swaps the whole file for new
//! contents (write a temporary file, sync it, rename over, sync the directory): compaction.
//!
//! Reading happens once, at shard start, with plain blocking reads (`read_all`). This module
//! owns the file; it must not know what the bytes mean.

use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, OpenOptions};

/// One shard's append-only log file.
pub struct LogFile {
    file: BufferedFile,
    path: PathBuf,
    len: u64,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

fn glommio_err(op: &str, path: &Path, e: glommio::GlommioError<()>) -> io::Error {
    io::Error::other(format!("{op} {}: {e}", path.display()))
}

/// The whole file, or nothing if it does not exist yet (blocking; for start-up replay).
pub fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("reading {}: {e}", path.display()),
        )),
    }
}

/// Cuts a file to `len` bytes (blocking; start-up only, to drop a torn tail).
pub fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

impl LogFile {
    /// Opens (creating if needed) the log at `path` for appending.
    pub async fn open(path: &Path) -> io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .buffered_open(path)
            .await
            .map_err(|e| glommio_err("opening", path, e))?;
        let len = file
            .file_size()
            .await
            .map_err(|e| glommio_err("sizing", path, e))?;
        Ok(LogFile {
            file,
            path: path.to_path_buf(),
            len,
        })
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `bytes` and makes them durable before returning.
    pub async fn append_sync(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        let n = bytes.len();
        let written = self
            .file
            .write_at(bytes, self.len)
            .await
            .map_err(|e| glommio_err("appending to", &self.path, e))?;
        if written != n {
            // glommio writes the whole buffer or fails; a short write means a full disk.
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to {} ({written} of {n} bytes)",
                    self.path.display()
                ),
            ));
        }
        self.file
            .fdatasync()
            .await
            .map_err(|e| glommio_err("syncing", &self.path, e))?;
        self.len += n as u64;
        Ok(())
    }

    /// Replaces the whole file with `bytes`, atomically and durably.
    pub async fn replace_with(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        let tmp = self.path.with_extension("compact");
        let n = bytes.len() as u64;
        {
            let f = BufferedFile::create(&tmp)
                .await
                .map_err(|e| glommio_err("creating", &tmp, e))?;
            f.write_at(bytes, 0)
                .await
                .map_err(|e| glommio_err("writing", &tmp, e))?;
            f.fdatasync()
                .await
                .map_err(|e| glommio_err("syncing", &tmp, e))?;
            f.close()
                .await
                .map_err(|e| glommio_err("closing", &tmp, e))?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        let reopened = LogFile::open(&self.path).await?;
        let old = std::mem::replace(self, reopened);
        let _ = old.file.close().await;
        debug_assert_eq!(self.len, n);
        Ok(())
    }
}
