//! The media signing key: 32 random bytes in `<data dir>/media/key` (mode 0600), made once
//! (written to a temporary name, fsynced, renamed, directory fsynced) and read at every
//! start, so tokens signed before a restart still open after it. Shards sign with it and the
//! media service verifies with it; nobody writes it after creation.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use messaging::media::token::{MediaKey, MEDIA_KEY_BYTES};

/// The key file's name inside the media directory.
pub const KEY_FILE: &str = "key";

/// Reads the key in `dir`, or makes one there.
pub fn load_or_create(dir: &Path) -> std::io::Result<MediaKey> {
    load_or_create_bytes(dir).map(|b| MediaKey::new(&b))
}

/// [`load_or_create`], the key's bytes (a cluster box offers them as the cluster's key:
/// `cluster/media_key.rs`).
pub fn load_or_create_bytes(dir: &Path) -> std::io::Result<[u8; MEDIA_KEY_BYTES]> {
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes: [u8; MEDIA_KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
                std::io::Error::other(format!(
                    "{}: a media key is {MEDIA_KEY_BYTES} bytes",
                    path.display()
                ))
            })?;
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; MEDIA_KEY_BYTES];
            (crate::adapter::random::os_random())(&mut bytes);
            let tmp = dir.join("key.tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(bytes)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use messaging::media::token::{Purpose, Token};

    #[test]
    fn the_key_is_made_once_and_read_back() {
        let dir = testkit::temp_dir("media-key");
        let t = Token {
            purpose: Purpose::Download,
            user: 1,
            sha256: [3; 32],
            size: 1,
            expires_at_ms: 9,
        };
        let signed = load_or_create(&dir).unwrap().sign(&t);
        assert_eq!(load_or_create(&dir).unwrap().open(&signed), Ok(t));
        std::fs::write(dir.join(KEY_FILE), b"short").unwrap();
        assert!(load_or_create(&dir).is_err());
    }
}
