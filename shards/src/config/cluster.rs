//! The cluster settings (issue 24): `--cluster nats://H:P[,..] --box-id ID --advertise
//! HOST:PORT [--cluster-optional] [--cluster-stream-only] [--cluster-linger-us US]`, or a
//! `[cluster]` table in the TOML file with the keys `nats`, `box_id`, `advertise`,
//! `optional`, `stream_only` and `linger_us`. Flags win over the file. This module only
//! parses and validates; the gateway (`crate::cluster`) starts from what it returns.
//!
//! Without `--cluster` (or a `[cluster]` table) there is no cluster: the other three are
//! refused on their own, so a typo cannot leave a box alone while its operator thinks it
//! joined.

use serde::Deserialize;

use super::ConfigError;

/// Most NATS server URLs one box may be given.
pub const CLUSTER_SERVERS_MAX: usize = 16;
/// Longest box id, in bytes. It names the box in NATS subjects and KV keys, so it is
/// limited to ASCII letters, digits, `-` and `_`.
pub const BOX_ID_BYTES_MAX: usize = 32;
/// Longest a gateway may hold direct messages for more to join their batch
/// (`--cluster-linger-us`), in microseconds.
pub const CLUSTER_LINGER_US_MAX: u64 = 10_000;

/// The cluster flags (flattened into the server's [`super::Cli`]).
#[derive(Debug, Default, clap::Args)]
pub struct ClusterArgs {
    /// Join a cluster of boxes through these NATS servers (comma-separated nats://HOST:PORT).
    #[arg(long, value_name = "URLS")]
    pub cluster: Option<String>,
    /// This box's id in the cluster (letters, digits, '-' and '_'; at most 32).
    #[arg(long, value_name = "ID")]
    pub box_id: Option<String>,
    /// The HOST:PORT phones of other boxes are redirected to, to reach this box.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Start even when NATS cannot be reached: serve this box's own users alone (said in
    /// /readyz and the cluster_alone metric) and keep trying to join.
    #[arg(long)]
    pub cluster_optional: bool,
    /// Carry every message between boxes through JetStream, also to live boxes (no direct
    /// request/reply): the slower path, kept for comparison and as a way out.
    #[arg(long)]
    pub cluster_stream_only: bool,
    /// Hold direct messages and receipts for another box up to US microseconds, so that
    /// more leave in one NATS request: fewer thread wake-ups (less CPU per cross-box
    /// message) for up to US µs more latency. 0 (the default): each gateway turn's leave at
    /// once. At most 10000.
    #[arg(long, value_name = "US")]
    pub cluster_linger_us: Option<u64>,
}

/// The `[cluster]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    nats: Option<String>,
    box_id: Option<String>,
    advertise: Option<String>,
    optional: Option<bool>,
    stream_only: Option<bool>,
    linger_us: Option<u64>,
}

/// A box's cluster settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://HOST:PORT`), tried in turn.
    pub servers: Vec<String>,
    /// This box's id.
    pub box_id: String,
    /// Where phones redirected to this box connect.
    pub advertise: String,
    /// Serve alone when NATS cannot be reached at start, instead of exiting 1.
    pub optional: bool,
    /// Messages to live boxes go through JetStream too (`cluster/direct.rs` not used).
    pub stream_only: bool,
    /// How long the gateway holds direct messages for a batch to fill, in microseconds (0:
    /// not at all; `cluster/direct.rs` step 5).
    pub linger_us: u64,
}

/// Merges the flags over the file's `[cluster]` table; `None` when no cluster is asked for.
pub fn resolve(
    args: ClusterArgs,
    file: Option<FileCluster>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let file = file.unwrap_or_default();
    let urls = args.cluster.or(file.nats);
    let box_id = args.box_id.or(file.box_id);
    let advertise = args.advertise.or(file.advertise);
    let optional = args.cluster_optional || file.optional.unwrap_or(false);
    let stream_only = args.cluster_stream_only || file.stream_only.unwrap_or(false);
    let linger_us = args.cluster_linger_us.or(file.linger_us);
    let Some(urls) = urls else {
        if box_id.is_some() || advertise.is_some() || optional || stream_only || linger_us.is_some()
        {
            return Err(invalid(
                "box_id, advertise, cluster_optional, cluster_stream_only and \
                 cluster_linger_us need --cluster (or nats in [cluster])",
            ));
        }
        return Ok(None);
    };
    let servers = servers(&urls)?;
    let box_id = box_id.ok_or_else(|| invalid("--cluster needs --box-id"))?;
    check_box_id(&box_id)?;
    let advertise = advertise.ok_or_else(|| invalid("--cluster needs --advertise HOST:PORT"))?;
    check_host_port(&advertise)?;
    let linger_us = linger_us.unwrap_or(0);
    if linger_us > CLUSTER_LINGER_US_MAX {
        return Err(ConfigError::Invalid(format!(
            "--cluster-linger-us takes 0..={CLUSTER_LINGER_US_MAX}, got {linger_us}"
        )));
    }
    Ok(Some(ClusterConfig {
        servers,
        box_id,
        advertise,
        optional,
        stream_only,
        linger_us,
    }))
}

fn invalid(s: &str) -> ConfigError {
    ConfigError::Invalid(s.to_string())
}

/// `nats://H:P[,tls://H:P...]` → the URLs, each checked (also for `switchboard cluster`).
pub fn servers(urls: &str) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() || list.len() > CLUSTER_SERVERS_MAX {
        return Err(ConfigError::Invalid(format!(
            "--cluster takes 1..={CLUSTER_SERVERS_MAX} nats:// or tls:// URLs, got {}",
            list.len()
        )));
    }
    for url in &list {
        let Some(rest) = url
            .strip_prefix("nats://")
            .or_else(|| url.strip_prefix("tls://"))
        else {
            return Err(ConfigError::Invalid(format!(
                "cluster server {url:?} is not nats://HOST:PORT or tls://HOST:PORT"
            )));
        };
        check_host_port(rest)?;
    }
    Ok(list)
}

/// A box id names the box in NATS subjects and KV keys: ASCII letters, digits, `-`, `_`, at
/// most [`BOX_ID_BYTES_MAX`] bytes.
pub fn check_box_id(id: &str) -> Result<(), ConfigError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if id.is_empty() || id.len() > BOX_ID_BYTES_MAX || !id.chars().all(ok_char) {
        return Err(ConfigError::Invalid(format!(
            "box id {id:?}: 1..={BOX_ID_BYTES_MAX} letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// `HOST:PORT` with a non-empty host (a name, an IPv4 address or a bracketed IPv6 one) and
/// a port 1..=65535.
fn check_host_port(s: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::Invalid(format!("{s:?} is not HOST:PORT"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) || host.contains('/') {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cluster: Option<&str>, id: Option<&str>, adv: Option<&str>) -> ClusterArgs {
        ClusterArgs {
            cluster: cluster.map(String::from),
            box_id: id.map(String::from),
            advertise: adv.map(String::from),
            cluster_optional: false,
            cluster_stream_only: false,
            cluster_linger_us: None,
        }
    }

    #[test]
    fn no_cluster_flag_is_no_cluster() {
        assert_eq!(resolve(ClusterArgs::default(), None).unwrap(), None);
    }

    #[test]
    fn a_full_set_of_flags_resolves() {
        let a = args(
            Some("nats://127.0.0.1:4222, nats://nats2:4222"),
            Some("box-1"),
            Some("chat1.example.net:5222"),
        );
        let c = resolve(a, None).unwrap().unwrap();
        assert_eq!(c.servers, ["nats://127.0.0.1:4222", "nats://nats2:4222"]);
        assert_eq!(c.box_id, "box-1");
        assert_eq!(c.advertise, "chat1.example.net:5222");
        assert!(!c.optional);
    }

    #[test]
    fn the_file_table_fills_what_flags_leave() {
        let file: FileCluster = toml::from_str(
            "nats = \"nats://n:4222\"\nbox_id = \"b\"\nadvertise = \"[::1]:5222\"\noptional = true",
        )
        .unwrap();
        let c = resolve(args(None, Some("flag-wins"), None), Some(file))
            .unwrap()
            .unwrap();
        assert_eq!(c.box_id, "flag-wins");
        assert_eq!(c.advertise, "[::1]:5222");
        assert!(c.optional);
    }

    #[test]
    fn half_a_cluster_setting_is_refused() {
        for a in [
            args(None, Some("b"), None),
            args(None, None, Some("h:1")),
            args(Some("nats://n:4222"), None, Some("h:1")),
            args(Some("nats://n:4222"), Some("b"), None),
        ] {
            assert!(resolve(a, None).is_err());
        }
        let optional_alone = ClusterArgs {
            cluster_optional: true,
            ..Default::default()
        };
        assert!(resolve(optional_alone, None).is_err());
        let stream_only_alone = ClusterArgs {
            cluster_stream_only: true,
            ..Default::default()
        };
        assert!(resolve(stream_only_alone, None).is_err());
        let linger_alone = ClusterArgs {
            cluster_linger_us: Some(1),
            ..Default::default()
        };
        assert!(resolve(linger_alone, None).is_err());
    }

    #[test]
    fn a_linger_is_off_unless_asked_for_and_bounded() {
        let full = || args(Some("nats://n:4222"), Some("b"), Some("h:1"));
        assert_eq!(resolve(full(), None).unwrap().unwrap().linger_us, 0);
        let mut a = full();
        a.cluster_linger_us = Some(CLUSTER_LINGER_US_MAX);
        let c = resolve(a, None).unwrap().unwrap();
        assert_eq!(c.linger_us, CLUSTER_LINGER_US_MAX);
        let mut a = full();
        a.cluster_linger_us = Some(CLUSTER_LINGER_US_MAX + 1);
        assert!(resolve(a, None).is_err());
        let file: FileCluster = toml::from_str("linger_us = 500").unwrap();
        assert_eq!(resolve(full(), Some(file)).unwrap().unwrap().linger_us, 500);
    }

    #[test]
    fn live_boxes_are_reached_directly_unless_told_otherwise() {
        let c = resolve(args(Some("nats://n:4222"), Some("b"), Some("h:1")), None)
            .unwrap()
            .unwrap();
        assert!(!c.stream_only);
        let mut a = args(Some("nats://n:4222"), Some("b"), Some("h:1"));
        a.cluster_stream_only = true;
        assert!(resolve(a, None).unwrap().unwrap().stream_only);
    }

    #[test]
    fn bad_values_are_refused() {
        for (c, id, adv) in [
            ("http://n:4222", "b", "h:1"),
            ("nats://n", "b", "h:1"),
            ("nats://n:4222", "b.c", "h:1"),
            ("nats://n:4222", "", "h:1"),
            ("nats://n:4222", &"x".repeat(BOX_ID_BYTES_MAX + 1), "h:1"),
            ("nats://n:4222", "b", "h:0"),
            ("nats://n:4222", "b", ":5222"),
            (",", "b", "h:1"),
        ] {
            assert!(
                resolve(args(Some(c), Some(id), Some(adv)), None).is_err(),
                "{c} {id} {adv}"
            );
        }
    }
}
