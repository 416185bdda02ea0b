//! How a box (and `switchboard cluster status` / `import`) proves itself to NATS, from the
//! environment, so that no secret is on a command line or in a config dump:
//! - `SWITCHBOARD_NATS_CREDS=FILE`: a NATS credentials file (user JWT and NKey seed, as
//!   `nsc` writes it) — the choice for NATS accounts and per-box permissions;
//! - or `SWITCHBOARD_NATS_USER` and `SWITCHBOARD_NATS_PASSWORD`: a user of the servers'
//!   `authorization` block;
//! - `SWITCHBOARD_NATS_CA=FILE`: trust this CA for `tls://` servers (TLS is required then);
//!   `tls://` URLs without it use the system's roots.
//!
//! Without any of them a box connects without credentials, as before. This module only
//! builds the connection options; it must not connect or touch a shard.

use std::path::PathBuf;

/// A NATS credentials file.
pub const CREDS_ENV: &str = "SWITCHBOARD_NATS_CREDS";
/// A NATS user name (with [`PASSWORD_ENV`]).
pub const USER_ENV: &str = "SWITCHBOARD_NATS_USER";
/// That user's password.
pub const PASSWORD_ENV: &str = "SWITCHBOARD_NATS_PASSWORD";
/// A CA certificate file (PEM) for `tls://` servers.
pub const CA_ENV: &str = "SWITCHBOARD_NATS_CA";

/// The connection options for a client named `name`, with what the environment gives.
pub async fn options(name: String) -> Result<async_nats::ConnectOptions, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (creds, user, password) = (var(CREDS_ENV), var(USER_ENV), var(PASSWORD_ENV));
    let mut opts = match (creds, user, password) {
        (Some(_), Some(_), _) => {
            return Err(format!("set {CREDS_ENV} or {USER_ENV}, not both"));
        }
        (Some(path), None, _) => async_nats::ConnectOptions::with_credentials_file(&path)
            .await
            .map_err(|e| format!("{CREDS_ENV}={path}: {e}"))?,
        (None, Some(user), Some(password)) => {
            async_nats::ConnectOptions::new().user_and_password(user, password)
        }
        (None, Some(_), None) => return Err(format!("{USER_ENV} needs {PASSWORD_ENV}")),
        (None, None, Some(_)) => return Err(format!("{PASSWORD_ENV} needs {USER_ENV}")),
        (None, None, None) => async_nats::ConnectOptions::new(),
    };
    if let Some(ca) = var(CA_ENV) {
        if !std::path::Path::new(&ca).is_file() {
            return Err(format!("{CA_ENV}={ca}: no such file"));
        }
        opts = opts
            .add_root_certificates(PathBuf::from(ca))
            .require_tls(true);
    }
    Ok(opts.name(name))
}
