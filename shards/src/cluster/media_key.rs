//! One media signing key for the whole cluster, so that a download URL signed at the
//! recipient's home box opens at the box whose media service holds the object (`cross.rs`
//! names that service in the envelope; `handlers/media.rs` signs for it).
//!
//! ## Steps (at start, before the media service and the shards, only for a box with both
//! `--cluster` and `--media-listen`)
//! 1. Read (or make) the box's own key file, `<data>/media/key`, as a single box does.
//! 2. Connect to NATS (a short-lived client on a runtime of its own, within
//!    [`MEDIA_KEY_WAIT_MS`]), open or create the `switchboard_media` KV bucket and offer the
//!    file's key as entry [`MEDIA_KEY_ENTRY`] with KV `create`: the first box to offer one
//!    sets the cluster's key (its old links keep opening), every other box reads it. Nobody
//!    writes the entry after that.
//! 3. The box signs with, and its media service verifies with, the cluster's key; the
//!    service also still opens tokens signed with the file's key (`server.rs` hands it
//!    both), so links the box handed out before it joined keep working.
//!
//! A box that cannot reach NATS does not start (the same one line as the gateway's), or
//! with `--cluster-optional` keeps its file key (logged): its links open on its own service
//! only until it restarts with NATS reachable.
//!
//! Who can read the key: whoever can read the bucket, that is whoever the NATS servers let
//! in as a box (`nats_auth.rs`); such a client could forge envelopes already.
//!
//! This module only fetches the key; it must not touch a shard or the media files.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use messaging::media::token::MEDIA_KEY_BYTES;

use crate::config::cluster::ClusterConfig;

/// The bucket holding the cluster's media key.
pub const MEDIA_BUCKET: &str = "switchboard_media";
/// The key's entry in [`MEDIA_BUCKET`].
pub const MEDIA_KEY_ENTRY: &str = "key";
/// How long start-up waits for NATS and the bucket.
pub const MEDIA_KEY_WAIT_MS: u64 = super::gateway::CONNECT_WAIT_MS;

/// Steps 2 and 3: the cluster's key, `offer` if this box is the first to offer one.
pub fn shared(
    cfg: &ClusterConfig,
    offer: [u8; MEDIA_KEY_BYTES],
) -> Result<[u8; MEDIA_KEY_BYTES], String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let wait = Duration::from_millis(MEDIA_KEY_WAIT_MS);
    rt.block_on(async {
        tokio::time::timeout(wait, fetch(cfg, offer))
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    })
}

async fn fetch(
    cfg: &ClusterConfig,
    offer: [u8; MEDIA_KEY_BYTES],
) -> Result<[u8; MEDIA_KEY_BYTES], String> {
    let client = super::gateway::box_client(cfg, " media key").await?;
    let js = jetstream::new(client.clone());
    let description = "switchboard: the cluster's media signing key, written once";
    let store = super::gateway::write_once_bucket(&js, MEDIA_BUCKET, description).await?;
    let key = match store.create(MEDIA_KEY_ENTRY, offer.to_vec().into()).await {
        Ok(_) => offer,
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let found = store
                .get(MEDIA_KEY_ENTRY)
                .await
                .map_err(|e| format!("bucket {MEDIA_BUCKET}: {e}"))?
                .ok_or_else(|| {
                    format!("bucket {MEDIA_BUCKET}: the key exists but reads as absent")
                })?;
            <[u8; MEDIA_KEY_BYTES]>::try_from(found.as_ref()).map_err(|_| {
                format!("bucket {MEDIA_BUCKET}: the key is not {MEDIA_KEY_BYTES} bytes")
            })?
        }
        Err(e) => return Err(format!("bucket {MEDIA_BUCKET}: {e}")),
    };
    let _ = client.drain().await;
    Ok(key)
}
