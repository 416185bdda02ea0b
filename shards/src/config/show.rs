//! `switchboard --check-config FILE`: the effective settings after merging flags, the file
//! and the defaults, printed as a TOML file with the same keys (so it can be saved and used).
//!
//! Secrets are not printed: the load-test secret shows as a comment saying it is set, and a
//! webhook URL keeps its scheme, host and path but not its user info or query (where gateway
//! tokens live). This module only formats; it must not start or bind anything.

use std::fmt::Write as _;

use crate::config::ServerConfig;

fn val(v: impl Into<toml::Value>) -> String {
    v.into().to_string()
}

fn path(p: &std::path::Path) -> String {
    val(p.display().to_string())
}

/// `url` without user info and without query or fragment.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (host, tail) = rest.split_once('/').map_or((rest, ""), |(h, t)| (h, t));
    let host = host.rsplit('@').next().unwrap_or(host);
    let redacted = url.contains(['@', '?', '#']);
    let out = if tail.is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/{tail}")
    };
    if redacted {
        format!("{out} (user info and query not shown)")
    } else {
        out
    }
}

fn threshold(t: Option<u64>) -> String {
    val(t.unwrap_or(0) as i64)
}

/// The effective settings as TOML (keys of [`crate::config::FileConfig`]).
pub fn effective_toml(c: &ServerConfig) -> String {
    let mut o = String::new();
    let mut kv = |k: &str, v: String| {
        let _ = writeln!(o, "{k} = {v}");
    };
    kv("listen", val(c.listen.to_string()));
    kv("shards", val(c.shards as i64));
    kv("data_dir", path(&c.data_dir));
    kv("no_tls", val(!c.tls));
    if let Some((cert, key)) = &c.cert_key {
        kv("cert", path(cert));
        kv("key", path(key));
    }
    kv("huge_pages", val(c.huge_pages));
    kv("realtime", val(c.realtime));
    kv("no_pin", val(!c.pin_cpus));
    if let Some(n) = c.max_connections {
        kv("max_connections", val(n as i64));
    }
    kv("idle_timeout_s", val((c.idle_timeout_ms / 1000) as i64));
    kv(
        "handshake_timeout_s",
        val((c.handshake_timeout_ms / 1000) as i64),
    );
    kv("frame_timeout_s", val((c.frame_timeout_ms / 1000) as i64));
    kv("login_timeout_s", val((c.login_timeout_ms / 1000) as i64));
    kv(
        "prelogin_conns_per_prefix",
        val(c.prelogin_conns_per_prefix_max as i64),
    );
    kv("compact_min_bytes", val(c.compact_min_bytes as i64));
    kv("commit_window_us", val(c.commit_window_us as i64));
    kv("coalesce_us", val(c.coalesce_us as i64));
    kv("coalesce", val(super::coalesce::coalesce_name(c.coalesce)));
    kv(
        "journal_pending_bytes_max",
        val(c.overload.journal_pending_bytes_max as i64),
    );
    kv("mesh_queued_max", val(c.overload.mesh_queued_max as i64));
    kv(
        "admin",
        val(c.admin.map_or("off".to_string(), |a| a.to_string())),
    );
    kv("no_stats", val(!c.stats));
    kv("alarm_queue_user", threshold(c.alarms.queue_user_items));
    kv("alarm_queue_shard", threshold(c.alarms.queue_shard_items));
    kv("alarm_mesh_depth", threshold(c.alarms.mesh_depth_msgs));
    kv("alarm_utilisation_pct", threshold(c.alarms.utilisation_pct));
    kv("alarm_turn_max_ms", threshold(c.alarms.turn_max_ms));
    kv("alarm_period_s", val((c.alarms.period_ms / 1000) as i64));
    if c.max_connections.is_none() {
        let _ = writeln!(o, "# max_connections: the open-file limit less a reserve");
    }
    for (k, url) in [
        ("sms_webhook", &c.sms_webhook),
        ("push_webhook", &c.push_webhook),
    ] {
        match url {
            Some(u) => {
                let _ = writeln!(o, "# {k}: {}", redact_url(u));
            }
            None => {
                let _ = writeln!(o, "# {k}: none (dev outbox / log line)");
            }
        }
    }
    if c.load_test_secret.is_some() {
        let _ = writeln!(
            o,
            "# load_test_secret: SET (not shown; anyone holding it can log in as anyone)"
        );
    }
    if let Some(m) = &c.media {
        o.push_str(&crate::config::media::toml_section(m));
    }
    if let Some(cl) = &c.cluster {
        let _ = writeln!(o, "\n[cluster]");
        let _ = writeln!(o, "nats = {}", val(cl.servers.join(",")));
        let _ = writeln!(o, "box_id = {}", val(cl.box_id.clone()));
        let _ = writeln!(o, "advertise = {}", val(cl.advertise.clone()));
        let _ = writeln!(o, "optional = {}", val(cl.optional));
        let _ = writeln!(o, "stream_only = {}", val(cl.stream_only));
        let _ = writeln!(o, "linger_us = {}", cl.linger_us);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cli;
    use clap::Parser;

    /// `cfg` printed into `dir`, and the settings that file reads back as (with the text).
    fn read_back(cfg: &ServerConfig, dir: &std::path::Path) -> (ServerConfig, String) {
        let text = effective_toml(cfg);
        let out = dir.join("out.toml");
        std::fs::write(&out, &text).unwrap();
        let cli = Cli::parse_from(["switchboard", "--config", out.to_str().unwrap()]);
        (ServerConfig::from_cli(cli).unwrap(), text)
    }

    #[test]
    fn printed_settings_read_back_as_the_same_settings() {
        let dir = std::env::temp_dir().join(format!("sb-show-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("in.toml");
        std::fs::write(
            &file,
            "shards = 3\nno_tls = true\nadmin = \"off\"\nalarm_queue_user = 9\n\
             max_connections = 1000\ndata_dir = \"/var/lib/switch \\\"board\\\"\"\n\
             [media]\nlisten = \"127.0.0.1:8443\"\nretention_days = 9\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["switchboard", "--config", file.to_str().unwrap()]);
        let cfg = ServerConfig::from_cli(cli).unwrap();
        let (again, text) = read_back(&cfg, &dir);
        assert_eq!(format!("{cfg:?}"), format!("{again:?}"), "{text}");
        assert!(text.contains("alarm_queue_user = 9\n"), "{text}");
        assert!(text.contains("admin = \"off\"\n"), "{text}");
        assert!(
            text.contains("[media]\nlisten = \"127.0.0.1:8443\"\n"),
            "{text}"
        );
        assert!(text.contains("retention_days = 9\n"), "{text}");
    }

    #[test]
    fn the_cluster_table_reads_back_as_the_same_cluster() {
        let dir = std::env::temp_dir().join(format!("sb-show-cl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cli = Cli::parse_from([
            "switchboard",
            "--cluster",
            "nats://10.0.0.1:4222,nats://10.0.0.2:4222",
            "--box-id",
            "paris-1",
            "--advertise",
            "chat1.example.net:5222",
            "--cluster-optional",
            "--cluster-stream-only",
            "--cluster-linger-us",
            "500",
        ]);
        let cfg = ServerConfig::from_cli(cli).unwrap();
        let (again, text) = read_back(&cfg, &dir);
        assert_eq!(cfg.cluster, again.cluster, "{text}");
        assert!(cfg
            .cluster
            .is_some_and(|c| c.optional && c.stream_only && c.linger_us == 500));
    }

    #[test]
    fn secrets_are_not_printed() {
        let cli = Cli::parse_from([
            "switchboard",
            "--sms-webhook",
            "https://user:pw@sms.example/send?token=abc",
        ]);
        let cfg = ServerConfig::from_cli_env(cli, Some("hunter2".into())).unwrap();
        let text = effective_toml(&cfg);
        for secret in ["hunter2", "pw", "token=abc", "user:"] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        assert!(
            text.contains("# sms_webhook: https://sms.example/send (user info"),
            "{text}"
        );
        assert_eq!(redact_url("http://gw.local/pin"), "http://gw.local/pin");
    }
}
