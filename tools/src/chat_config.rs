//! The CLI's config file: which server, which CA, and this device's phone and key.
//!
//! Default path: `$XDG_CONFIG_HOME/switchboard/chat.toml`, else
//! `~/.config/switchboard/chat.toml`. The file holds a login credential, so it is written
//! atomically and privately:
//! 1. a temp file next to it, with a name no one else picked: created with `O_EXCL` and
//!    `O_NOFOLLOW`, so a file or symlink someone left at that name is never opened (the next
//!    name is tried, [`TMP_NAME_TRIES_MAX`] at most);
//! 2. mode 0600 set on the open file (`fchmod`: whatever the umask) before a byte is written;
//! 3. written, synced, and renamed over the config path: a symlink there is replaced, never
//!    written through. A directory it creates is 0700.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

/// Permissions of the config file: owner read/write only (it holds the device key).
const CONFIG_FILE_MODE: u32 = 0o600;
/// Permissions of a config directory `save` creates.
const CONFIG_DIR_MODE: u32 = 0o700;
/// Temp names tried before `save` gives up (each taken by a file or link someone else left).
pub const TMP_NAME_TRIES_MAX: u32 = 64;

/// What `chat` remembers between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// Server address (`host:port`), unless given by `--server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// CA / dev certificate to trust, unless given by `--ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// This device's phone number (E.164), set by `register`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The device key from `verify`, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
    /// Next client_msg_id to use (so retries across runs never collide).
    #[serde(default = "one")]
    pub next_client_msg_id: u64,
}

fn one() -> u64 {
    1
}

/// Why the config file could not be used.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading failed.
    #[error("reading {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// Not valid TOML for this config.
    #[error("{path} is not a valid chat config: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// Writing failed.
    #[error("writing {path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The stored device key is not hex.
    #[error("device_key in {path} is not hex")]
    BadKey {
        /// The file.
        path: PathBuf,
    },
    /// Neither `$XDG_CONFIG_HOME` nor `$HOME` is set.
    #[error("no config path: set $XDG_CONFIG_HOME or $HOME, or pass --config")]
    NoHome,
}

/// The default config path from the environment.
pub fn default_path() -> Result<PathBuf, ConfigError> {
    default_path_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// The default path given `$XDG_CONFIG_HOME` and `$HOME` (empty values are ignored).
pub fn default_path_from(
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Result<PathBuf, ConfigError> {
    let base = match (
        xdg.filter(|v| !v.is_empty()),
        home.filter(|v| !v.is_empty()),
    ) {
        (Some(x), _) => PathBuf::from(x),
        (None, Some(h)) => PathBuf::from(h).join(".config"),
        (None, None) => return Err(ConfigError::NoHome),
    };
    Ok(base.join("switchboard").join("chat.toml"))
}

impl ChatConfig {
    /// Loads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<ChatConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ChatConfig {
                    next_client_msg_id: 1,
                    ..ChatConfig::default()
                })
            }
            Err(cause) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    cause,
                })
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            detail: e.to_string(),
        })
    }

    /// Writes to `path` (mode 0600, atomic rename, never through a symlink; steps in the
    /// module doc), creating the directory (0700).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let werr = |cause| ConfigError::Write {
            path: path.into(),
            cause,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(CONFIG_DIR_MODE)
                .create(dir)
                .map_err(werr)?;
        }
        // Invariant: ChatConfig holds only strings, paths and integers, which TOML can hold.
        let text = toml::to_string(self).expect("chat config serialises");
        let (tmp, mut f) = create_private_tmp(path).map_err(werr)?;
        let written = f
            .write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp); // ours: created with O_EXCL above
        }
        written.map_err(werr)
    }

    /// The device key as bytes, if one is stored.
    pub fn key_bytes(&self, path: &Path) -> Result<Option<Vec<u8>>, ConfigError> {
        match &self.device_key {
            None => Ok(None),
            Some(h) => from_hex(h)
                .map(Some)
                .ok_or_else(|| ConfigError::BadKey { path: path.into() }),
        }
    }

    /// Stores a device key.
    pub fn set_key(&mut self, key: &[u8]) {
        self.device_key = Some(to_hex(key));
    }

    /// Takes the next client_msg_id (≥ 1).
    pub fn take_client_msg_id(&mut self) -> u64 {
        let id = self.next_client_msg_id.max(1);
        self.next_client_msg_id = id + 1;
        id
    }
}

/// The `n`th temp name for `path`: `<path>.tmp.<pid>.<n>`.
fn tmp_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    PathBuf::from(name)
}

/// Creates a fresh temp file for `path` that no one else can have opened or linked: `O_EXCL`
/// and `O_NOFOLLOW`, mode 0600 set on the open file before anything is written.
fn create_private_tmp(path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    for _ in 0..TMP_NAME_TRIES_MAX {
        let tmp = tmp_path(path, NEXT.fetch_add(1, Ordering::Relaxed));
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(CONFIG_FILE_MODE)
            .open(&tmp);
        match opened {
            Ok(f) => {
                // The umask may have taken bits away, never added any; set exactly 0600.
                f.set_permissions(std::fs::Permissions::from_mode(CONFIG_FILE_MODE))?;
                return Ok((tmp, f));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{TMP_NAME_TRIES_MAX} temp names next to the config are taken"),
    ))
}

/// Lowercase hex.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses hex (either case); `None` if malformed.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trips_with_private_permissions() {
        let dir = std::env::temp_dir().join(format!("chat-config-{}", std::process::id()));
        let path = dir.join("nested").join("chat.toml");
        let mut c = ChatConfig {
            server: Some("127.0.0.1:5222".into()),
            ca: Some("/tmp/dev-cert.pem".into()),
            phone: Some("+15551234567".into()),
            ..ChatConfig::default()
        };
        c.set_key(&[0, 1, 0xab, 0xff]);
        assert_eq!(c.take_client_msg_id(), 1);
        c.save(&path).unwrap();
        let back = ChatConfig::load(&path).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.key_bytes(&path).unwrap(), Some(vec![0, 1, 0xab, 0xff]));
        assert_eq!(back.next_client_msg_id, 2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fresh directory for one test.
    fn fresh_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    fn saved_config() -> ChatConfig {
        let mut c = ChatConfig {
            phone: Some("+15551234567".into()),
            ..ChatConfig::default()
        };
        c.set_key(&[7; 16]);
        c
    }

    #[test]
    fn a_leftover_world_writable_tmp_file_is_never_used() {
        let dir = fresh_dir("tmp0666");
        let path = dir.join("chat.toml");
        // The old fixed temp name and this process's next names, all 0666 and pre-filled.
        let mut planted = vec![path.with_extension("toml.tmp")];
        planted.extend((0..8).map(|n| tmp_path(&path, n)));
        for p in &planted {
            std::fs::write(p, "planted").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        saved_config().save(&path).unwrap();
        assert_eq!(ChatConfig::load(&path).unwrap(), saved_config());
        assert_eq!(mode(&path), 0o600);
        for p in &planted {
            assert_eq!(std::fs::read_to_string(p).unwrap(), "planted", "{p:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_key_is_never_written_through_a_symlink() {
        let dir = fresh_dir("symlink");
        let path = dir.join("chat.toml");
        let victim = dir.join("victim");
        std::fs::write(&victim, "victim's file").unwrap();
        // Symlinks at the temp names this process may pick, and at the config path itself.
        let mut links: Vec<PathBuf> = (0..8).map(|n| tmp_path(&path, n)).collect();
        links.push(path.with_extension("toml.tmp"));
        for l in &links {
            std::os::unix::fs::symlink(&victim, l).unwrap();
        }
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        saved_config().save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim's file");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the link was replaced by a file"
        );
        assert_eq!(mode(&path), 0o600);
        assert_eq!(ChatConfig::load(&path).unwrap(), saved_config());
        for l in &links {
            assert!(std::fs::symlink_metadata(l)
                .unwrap()
                .file_type()
                .is_symlink());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_created_directory_is_private_and_no_temp_file_is_left() {
        let dir = fresh_dir("dir0700");
        let path = dir.join("switchboard").join("chat.toml");
        saved_config().save(&path).unwrap();
        saved_config().save(&path).unwrap();
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("chat.toml")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_is_empty_and_garbage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("chat-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = ChatConfig::load(&dir.join("none.toml")).unwrap();
        assert_eq!(c.phone, None);
        assert_eq!(c.next_client_msg_id, 1);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "phoen = 3\n").unwrap();
        assert!(matches!(
            ChatConfig::load(&bad),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::write(&bad, "device_key = \"xyz\"\n").unwrap();
        let c = ChatConfig::load(&bad).unwrap();
        assert!(matches!(c.key_bytes(&bad), Err(ConfigError::BadKey { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_path_prefers_xdg() {
        let p = default_path_from(Some("/x".into()), Some("/home/u".into())).unwrap();
        assert_eq!(p, PathBuf::from("/x/switchboard/chat.toml"));
        let p = default_path_from(Some("".into()), Some("/home/u".into())).unwrap();
        assert_eq!(p, PathBuf::from("/home/u/.config/switchboard/chat.toml"));
        assert!(default_path_from(None, None).is_err());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(from_hex(&to_hex(&[1, 2, 254])), Some(vec![1, 2, 254]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
