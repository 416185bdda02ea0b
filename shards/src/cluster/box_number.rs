//! This box's number in its cluster (1..=[`BOX_NUMBER_MAX`]), named in every id it issues
//! (`messaging::state::home`: `box << 58 | shard << 48 | sequence`), so two boxes never
//! issue the same id — a group's above all, since a group id says where the group lives.
//!
//! ## Steps (at start, before the shards and the gateway, only for a box with `--cluster`)
//! 1. Read the number an earlier start kept in `<data>/box-number`, if any.
//! 2. Connect to NATS (a short-lived client on a runtime of its own, within
//!    [`BOX_NUMBER_WAIT_MS`]) and open or create the [`BOX_NUMBERS_BUCKET`] KV bucket: an
//!    entry per number taken (key: the number in decimal; value: the box id).
//! 3. A kept number: its entry must name this box (written again with KV `create` if it is
//!    missing: a bucket lost and made anew). An entry naming another box refuses the start:
//!    two boxes would issue the same ids. No kept number: walking up from 1, the first
//!    entry that names this box (its data directory was replaced) or the first free number,
//!    taken with KV `create` (two boxes starting at once never take the same one). All
//!    [`BOX_NUMBER_MAX`] taken refuses the start.
//! 4. The number is written to the file (a temporary file, synced, renamed) before the box
//!    serves, so a restart keeps it even without NATS.
//!
//! A box that cannot reach NATS does not start (the gateway's one line), or with
//! `--cluster-optional` issues ids with the kept number, or with 0 (a box alone's) when it
//! never had one: such ids may clash with another box that also served alone, which the
//! group bucket detects (`groups.rs`, `cluster_group_clashes_total`).
//!
//! Numbers are never given back: a retired box's entry stays until an operator deletes it
//! (`nats kv del switchboard_box_numbers N`) once none of that box's groups are in use.
//!
//! This module only finds the number; it must not touch a shard or the gateway's client.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use messaging::state::home::BOX_NUMBER_MAX;

use crate::config::cluster::ClusterConfig;

/// The bucket of taken box numbers.
pub const BOX_NUMBERS_BUCKET: &str = "switchboard_box_numbers";
/// The file in the data directory that keeps this box's number.
pub const BOX_NUMBER_FILE: &str = "box-number";
/// How long start-up waits for NATS and the bucket.
pub const BOX_NUMBER_WAIT_MS: u64 = super::gateway::CONNECT_WAIT_MS;

/// Why the box has no number.
#[derive(Debug, thiserror::Error)]
pub enum BoxNumberError {
    /// NATS or the bucket did not answer: `--cluster-optional` may start alone.
    #[error("{0}")]
    Unreachable(String),
    /// The number cannot be this box's, whatever the options.
    #[error("box number: {0}")]
    Refused(String),
}

/// Steps 1 to 4: this box's number. With NATS unreachable and `cfg.optional`, the kept
/// number or 0, with a warning.
pub fn claim(cfg: &ClusterConfig, data_dir: &Path) -> Result<u8, BoxNumberError> {
    let file = data_dir.join(BOX_NUMBER_FILE);
    let kept = read_kept(&file)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BoxNumberError::Unreachable(format!("tokio runtime: {e}")))?;
    let wait = Duration::from_millis(BOX_NUMBER_WAIT_MS);
    let found = rt.block_on(async {
        tokio::time::timeout(wait, take(cfg, kept))
            .await
            .unwrap_or_else(|_| Err(BoxNumberError::Unreachable("timed out".into())))
    });
    let number = match found {
        Ok(n) => n,
        Err(BoxNumberError::Unreachable(e)) if cfg.optional => {
            let n = kept.unwrap_or(0);
            tracing::warn!(
                box_number = n,
                "cannot read the cluster's box numbers ({e}): issuing ids as box {n}"
            );
            return Ok(n);
        }
        Err(e) => return Err(e),
    };
    if kept != Some(number) {
        keep(&file, number).map_err(|e| {
            BoxNumberError::Refused(format!("cannot write {}: {e}", file.display()))
        })?;
    }
    tracing::info!(box_number = number, "box number");
    Ok(number)
}

/// Step 1: the number in `file`, if it exists.
fn read_kept(file: &Path) -> Result<Option<u8>, BoxNumberError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(BoxNumberError::Refused(format!(
                "cannot read {}: {e}",
                file.display()
            )))
        }
    };
    match text.trim().parse::<u8>() {
        Ok(n) if (1..=BOX_NUMBER_MAX).contains(&n) => Ok(Some(n)),
        _ => Err(BoxNumberError::Refused(format!(
            "{} holds {:?}, not a number 1..={BOX_NUMBER_MAX}",
            file.display(),
            text.trim()
        ))),
    }
}

/// Steps 2 and 3.
async fn take(cfg: &ClusterConfig, kept: Option<u8>) -> Result<u8, BoxNumberError> {
    let unreachable = |e: String| BoxNumberError::Unreachable(e);
    let client = super::gateway::box_client(cfg, " box number")
        .await
        .map_err(unreachable)?;
    let js = jetstream::new(client.clone());
    let description = "switchboard: box number -> box id, each written once";
    let store = super::gateway::write_once_bucket(&js, BOX_NUMBERS_BUCKET, description)
        .await
        .map_err(unreachable)?;
    let me = cfg.box_id.as_str();
    let number = match kept {
        Some(n) => match offer(&store, n, me).await? {
            Taken::Ours => n,
            Taken::By(other) => {
                return Err(BoxNumberError::Refused(format!(
                    "this data directory's box number {n} belongs to box {other:?} in the \
                     cluster (a copied data directory? give this box its own, or delete \
                     {BOX_NUMBER_FILE} to take a new number)"
                )))
            }
        },
        None => first_free_or_ours(&store, me).await?,
    };
    let _ = client.drain().await;
    Ok(number)
}

/// Walks up from 1: the first number whose entry names `me`, or the first free one.
async fn first_free_or_ours(store: &kv::Store, me: &str) -> Result<u8, BoxNumberError> {
    for n in 1..=BOX_NUMBER_MAX {
        if let Taken::Ours = offer(store, n, me).await? {
            return Ok(n);
        }
    }
    Err(BoxNumberError::Refused(format!(
        "all {BOX_NUMBER_MAX} box numbers are taken ({BOX_NUMBERS_BUCKET}): a cluster holds at \
         most {BOX_NUMBER_MAX} boxes"
    )))
}

/// Whose number `n` is once this box has offered to take it.
enum Taken {
    Ours,
    By(String),
}

/// Takes number `n` for `me` if it is free (KV `create`); says whose it is.
async fn offer(store: &kv::Store, n: u8, me: &str) -> Result<Taken, BoxNumberError> {
    let bucket_error =
        |e: String| BoxNumberError::Unreachable(format!("{BOX_NUMBERS_BUCKET}: {e}"));
    let key = n.to_string();
    match store.create(&key, me.as_bytes().to_vec().into()).await {
        Ok(_) => return Ok(Taken::Ours),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(bucket_error(e.to_string())),
    }
    let owner = store
        .get(&key)
        .await
        .map_err(|e| bucket_error(e.to_string()))?
        .ok_or_else(|| bucket_error(format!("entry {n} exists but reads as absent")))?;
    Ok(if owner.as_ref() == me.as_bytes() {
        Taken::Ours
    } else {
        Taken::By(String::from_utf8_lossy(&owner).into_owned())
    })
}

/// Step 4: writes `number` to `file` (temporary file, synced, renamed, directory synced).
fn keep(file: &Path, number: u8) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{number}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_number_reads_back_and_anything_else_in_the_file_is_refused() {
        let dir = testkit::temp_dir("box-number");
        let file = dir.join(BOX_NUMBER_FILE);
        assert_eq!(read_kept(&file).unwrap(), None, "no file: no number yet");
        keep(&file, 7).unwrap();
        assert_eq!(read_kept(&file).unwrap(), Some(7));
        for bad in ["0", "64", "x", "", "300"] {
            std::fs::write(&file, bad).unwrap();
            assert!(
                matches!(read_kept(&file), Err(BoxNumberError::Refused(_))),
                "{bad:?}"
            );
        }
    }
}
