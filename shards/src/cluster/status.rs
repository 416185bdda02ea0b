//! `switchboard cluster status --cluster nats://H:P[,..]`: the boxes of a cluster and their
//! load, for an operator at a shell.
//!
//! ## Steps
//! 1. Connect to NATS (any of the URLs, within [`STATUS_CONNECT_MS`]) on a current-thread
//!    tokio runtime of its own, as the gateway does; nothing here runs inside a server.
//! 2. Read every entry of the members bucket (`switchboard_members`): a box is listed while
//!    its lease lasts, with its advertised address and the connections it holds.
//! 3. Print one line per box, sorted by box id, and a total.
//!
//! Peer input (the values the boxes put) is bounded as in `membership.rs`: at most
//! [`MEMBERS_MAX`] entries, values of at most [`MEMBER_VALUE_BYTES_MAX`] bytes; an entry
//! that does not parse is listed as unreadable, never trusted. This module reads the bucket;
//! it must not write to it or touch a running box.

use std::fmt::Write as _;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;

use super::membership::{Member, MEMBERS_BUCKET, MEMBERS_MAX, MEMBER_VALUE_BYTES_MAX};

/// Longest wait for NATS to answer, per step.
pub const STATUS_CONNECT_MS: u64 = 5_000;

/// What the members bucket says now, as text for a terminal; an error in one line.
pub fn cluster_status(servers: &[String]) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let wait = Duration::from_millis(STATUS_CONNECT_MS);
    rt.block_on(async {
        tokio::time::timeout(wait * 3, read_members(servers, wait))
            .await
            .map_err(|_| format!("NATS at {} did not answer in time", servers.join(",")))?
    })
}

async fn read_members(servers: &[String], wait: Duration) -> Result<String, String> {
    let client = super::nats_auth::options("switchboard cluster status".into())
        .await?
        .connection_timeout(wait)
        .connect(servers)
        .await
        .map_err(|e| format!("cannot reach NATS at {}: {e}", servers.join(",")))?;
    let js = jetstream::new(client);
    let store = js.get_key_value(MEMBERS_BUCKET).await.map_err(|e| {
        format!("no members bucket ({MEMBERS_BUCKET}: {e}): has any box joined this cluster?")
    })?;
    let mut keys = store
        .keys()
        .await
        .map_err(|e| format!("cannot list {MEMBERS_BUCKET}: {e}"))?;
    let mut ids = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| format!("cannot list {MEMBERS_BUCKET}: {e}"))?;
        if ids.len() == MEMBERS_MAX {
            break;
        }
        ids.push(key);
    }
    ids.sort();
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let value = store
            .get(&id)
            .await
            .map_err(|e| format!("cannot read {MEMBERS_BUCKET}/{id}: {e}"))?;
        let member = value
            .filter(|v| v.len() <= MEMBER_VALUE_BYTES_MAX)
            .and_then(|v| serde_json::from_slice::<Member>(&v).ok());
        rows.push((id, member));
    }
    Ok(render(&rows))
}

/// The table: one line per box (id, advertised address, connections), then a total.
fn render(rows: &[(String, Option<Member>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<32} {:>12}",
        "box", "advertise", "connections"
    );
    let mut total = 0u64;
    for (id, m) in rows {
        match m {
            Some(m) => {
                total += m.load;
                let _ = writeln!(out, "{id:<20} {:<32} {:>12}", m.advertise, m.load);
            }
            None => {
                let _ = writeln!(out, "{id:<20} {:<32} {:>12}", "(unreadable entry)", "-");
            }
        }
    }
    let _ = writeln!(
        out,
        "{} box(es) live, {total} connections (a box is listed while its lease lasts: {} s)",
        rows.len(),
        super::membership::MEMBER_LEASE_MS / 1000
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_each_box_and_the_total_and_marks_an_unreadable_entry() {
        let rows = vec![
            (
                "a".to_string(),
                Some(Member {
                    advertise: "10.0.0.1:5222".into(),
                    load: 7,
                    started_ms: 0,
                }),
            ),
            ("b".to_string(), None),
            (
                "c".to_string(),
                Some(Member {
                    advertise: "10.0.0.3:5222".into(),
                    load: 5,
                    started_ms: 0,
                }),
            ),
        ];
        let text = render(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[1].starts_with('a') && lines[1].contains("10.0.0.1:5222"));
        assert!(lines[2].contains("unreadable"));
        assert!(
            lines[4].starts_with("3 box(es) live, 12 connections"),
            "{text}"
        );
    }
}
