//! The CLI's config file: which server, which CA, and this device's phone and key.
//!
//! Default path: `$XDG_CONFIG_HOME/switchboard/chat.toml`, else
//! `~/.config/switchboard/chat.toml`. The file holds a login credential, so it is written
//! with mode 0600 (atomically: a temp file renamed over the old one).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Permissions of the config file: owner read/write only (it holds the device key).
const CONFIG_FILE_MODE: u32 = 0o600;

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

    /// Writes to `path` (mode 0600, atomic rename), creating the directory.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let werr = |cause| ConfigError::Write {
            path: path.into(),
            cause,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
        // Invariant: ChatConfig holds only strings, paths and integers, which TOML can hold.
        let text = toml::to_string(self).expect("chat config serialises");
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(CONFIG_FILE_MODE)
            .open(&tmp)
            .map_err(werr)?;
        f.write_all(text.as_bytes()).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        std::fs::rename(&tmp, path).map_err(werr)
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

/// Lowercase hex.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses hex (either case); `None` if malformed.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
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
