//! `switchboard cluster import --data-dir DIR --cluster nats://H:P[,..] --box-id ID`: gives
//! every account of a box that served alone this box as its home, before the box first
//! joins a cluster with `--box-id ID`.
//!
//! Why: a phone's home is recorded when it signs up in a cluster (`placement.rs`). Accounts
//! made while the box ran alone have none, so another box would hash them a home elsewhere
//! (a login there is redirected away from the account and its queue, and a message for it
//! is answered as for a number nobody has). Run once, with the box stopped.
//!
//! ## Steps
//! 1. Take the data directory's lock (a running box holds it: refused) and read its shard
//!    count.
//! 2. Replay each shard's log into a shard state, read-only (the server's own replay,
//!    `messaging::durable::replay`), and take its verified accounts.
//! 3. Record this box as each one's home with KV `create` ([`placement::claim`]), at most
//!    [`CLAIMS_IN_FLIGHT_MAX`] at once: a phone already homed here is left as it is, one
//!    homed on another box is left there and reported (that box's account wins: its
//!    account here is not reachable through the cluster).
//! 4. Print what it did. Running it again changes nothing.
//!
//! This module owns the import; it writes nothing in the data directory.

use std::path::Path;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use super::placement::{self, Claimed};

/// Homes being recorded at once.
pub const CLAIMS_IN_FLIGHT_MAX: usize = 64;
/// Longest wait for NATS to answer at the start.
pub const IMPORT_CONNECT_MS: u64 = 5_000;
/// Phones homed elsewhere named in the report, at most (the rest are counted).
pub const ELSEWHERE_NAMED_MAX: usize = 10;

/// Steps 1-4: the report, or why nothing was done, in one line.
pub fn import(data_dir: &Path, servers: &[String], box_id: &str) -> Result<String, String> {
    crate::config::cluster::check_box_id(box_id).map_err(|e| e.to_string())?;
    let _lock = crate::data::lock::lock(data_dir)
        .map_err(|e| format!("{e} (stop the box before importing)"))?;
    let phones = accounts(data_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(claim_all(servers, box_id, phones))
}

/// Step 2: every verified account in the data directory's shard logs.
fn accounts(data_dir: &Path) -> Result<Vec<String>, String> {
    use messaging::state::{ServiceSettings, ShardState};
    let shards = crate::data::layout::recorded_shard_count(data_dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: no shard logs: nothing to import", data_dir.display()))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut phones = Vec::new();
    for shard in 0..shards {
        let mut state = ShardState::new(
            proto::ids::ShardId(shard),
            shards,
            ServiceSettings::default(),
            crate::adapter::random::os_random(),
            now_ms,
        );
        let path = crate::data::journal_check::log_path(data_dir, shard);
        let mut window = crate::data::journal_reader::open_window(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        messaging::durable::replay::replay_log(&mut window, &mut state)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        phones.extend(state.registry().snapshot().map(|a| a.phone));
    }
    Ok(phones)
}

/// Step 3 and 4.
async fn claim_all(
    servers: &[String],
    box_id: &str,
    phones: Vec<String>,
) -> Result<String, String> {
    let wait = Duration::from_millis(IMPORT_CONNECT_MS);
    let client = super::nats_auth::options(format!("switchboard cluster import {box_id}"))
        .await?
        .connection_timeout(wait)
        .connect(servers)
        .await
        .map_err(|e| format!("cannot reach NATS at {}: {e}", servers.join(",")))?;
    let js = async_nats::jetstream::new(client);
    let homes = super::gateway::homes_bucket(&js).await?;
    let total = phones.len();
    let mut claims = stream::iter(phones)
        .map(|phone| {
            let homes = homes.clone();
            async move {
                let claimed = placement::claim(&homes, &phone, box_id).await;
                (phone, claimed)
            }
        })
        .buffer_unordered(CLAIMS_IN_FLIGHT_MAX);
    let (mut now, mut already, mut elsewhere) = (0usize, 0usize, Vec::new());
    while let Some((phone, claimed)) = claims.next().await {
        match claimed.map_err(|e| format!("{phone}: {e} (nothing is lost: run it again)"))? {
            Claimed::Now => now += 1,
            Claimed::Already => already += 1,
            Claimed::Elsewhere(home) => elsewhere.push(format!("{phone} (on {home})")),
        }
    }
    let mut report = format!(
        "{total} accounts in {box_id}'s data: {now} now homed on {box_id}, {already} were \
         already, {} homed on another box\n",
        elsewhere.len()
    );
    if !elsewhere.is_empty() {
        let named: Vec<&str> = elsewhere
            .iter()
            .take(ELSEWHERE_NAMED_MAX)
            .map(String::as_str)
            .collect();
        report.push_str(&format!(
            "homed elsewhere (their accounts here are not reachable in the cluster): {}{}\n",
            named.join(", "),
            if elsewhere.len() > named.len() {
                ", ..."
            } else {
                ""
            }
        ));
    }
    Ok(report)
}
