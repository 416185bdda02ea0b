//! `replay-cost`: a shard's start-up replay against the size of its log: seconds, and peak
//! resident memory (VmHWM), streamed as the server does it and, for comparison, as it did
//! before (the whole log read and every record decoded before any is applied).
//!
//! Writes a log of `--mb` megabytes shaped like the group flood of issue 22 and the traffic
//! around it: accounts, groups of `--members` members created by those accounts, and
//! messages of `--body` bytes of which all but `--kept-per-mille` were acked (their
//! tombstones follow). Then, for each mode, a fresh child process (so VmHWM is replay's
//! alone) runs the start-up check pass and the replay into one `ShardState`, and prints
//! what it took. The state replay rebuilds legitimately takes memory (the groups); what
//! must not grow with the log is what replay buffers, so read the stream mode's peak
//! against the state's size, and against the whole mode's.
//!
//! The log is read from the page cache (it was just written): the seconds are replay's
//! CPU, not a cold disk's.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use messaging::durable::record::{
    self, record::Kind, AccountRec, GroupRec, ItemRec, Record, RemovedRec,
};
use messaging::state::{ServiceSettings, ShardState};
use prost::Message as _;
use proto::ids::ShardId;
use proto::v1::{server_frame, Message as Msg, ServerFrame};

#[derive(Parser)]
#[command(about = "Start-up replay seconds and peak RSS against the log's size")]
struct Args {
    /// Megabytes of log to write and replay.
    #[arg(long, default_value_t = 50)]
    mb: u64,
    /// Members per group.
    #[arg(long, default_value_t = 256)]
    members: usize,
    /// Body bytes per message.
    #[arg(long, default_value_t = 1_000)]
    body: usize,
    /// Share of the log's bytes that are group records, in percent.
    #[arg(long, default_value_t = 30)]
    groups_percent: u64,
    /// Messages (per thousand) never acked: still queued after replay.
    #[arg(long, default_value_t = 10)]
    kept_per_mille: u64,
    /// Where the log is written (removed afterwards).
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Internal: replay this log in this process (`stream` or `whole`) and print the result.
    #[arg(long, hide = true, num_args = 2, value_names = ["MODE", "LOG"])]
    child: Option<Vec<String>>,
}

fn phone(n: u64) -> String {
    format!("+1555{:07}", n % 10_000_000)
}

/// Writes the log; returns its length.
fn write_log(path: &Path, a: &Args) -> anyhow::Result<u64> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let target = a.mb * 1_000_000;
    let (mut written, mut group_bytes, mut id) = (0u64, 0u64, 1u64);
    let mut buf = Vec::new();
    let users = 10_000u64;
    for u in 0..users {
        let rec = Kind::Account(AccountRec {
            phone: phone(u),
            user_id: u + 1,
            key_hash: vec![7; 32],
        });
        record::encode(&Record { kind: Some(rec) }, &mut buf);
    }
    let mut pending_removals = Vec::new();
    while written + buf.len() as u64 <= target {
        written += buf.len() as u64;
        f.write_all(&buf)?;
        buf.clear();
        id += 1;
        if group_bytes * 100 < written * a.groups_percent {
            let first = id * 7;
            let rec = Kind::Group(GroupRec {
                group_id: id,
                name: format!("group {id}"),
                admin: phone(first),
                members: (0..a.members as u64).map(|m| phone(first + m)).collect(),
            });
            record::encode(&Record { kind: Some(rec) }, &mut buf);
            group_bytes += buf.len() as u64;
            continue;
        }
        let user = phone(id % users);
        let frame = ServerFrame {
            kind: Some(server_frame::Kind::Message(Msg {
                from: phone((id + 1) % users),
                server_msg_id: id,
                body: vec![b'x'; a.body],
                ..Default::default()
            })),
        }
        .encode_to_vec();
        let user = messaging::state::home::Phone::parse(&user);
        let rec = Kind::Item(ItemRec {
            user,
            id,
            frame,
            sender: messaging::state::home::Phone::parse(&phone((id + 1) % users)),
            client_msg_id: id,
            group_id: 0,
            sender_device: 0,
        });
        record::encode(&Record { kind: Some(rec) }, &mut buf);
        if id % 1_000 >= a.kept_per_mille {
            pending_removals.push(Kind::Removed(RemovedRec { user, id }));
        }
        // Tombstones ride on later batches.
        if pending_removals.len() >= 64 {
            for r in pending_removals.drain(..) {
                record::encode(&Record { kind: Some(r) }, &mut buf);
            }
        }
    }
    f.flush()?;
    f.get_ref().sync_all()?;
    Ok(written)
}

fn state() -> ShardState {
    let random = Box::new(|b: &mut [u8]| b.fill(3));
    ShardState::new(ShardId(0), 1, ServiceSettings::default(), random, 0)
}

fn peak_rss_mib() -> f64 {
    perf::proc_stats::peak_rss_bytes(std::process::id()).unwrap_or(0) as f64 / (1 << 20) as f64
}

/// Replays `log` in this process and prints one line of JSON.
fn child(mode: &str, log: &Path) -> anyhow::Result<()> {
    let before_mib = peak_rss_mib();
    let started = Instant::now();
    let mut s = state();
    let window_bytes = match mode {
        "stream" => {
            // What the server does: the start-up check, then the replay.
            shards::data::journal_check::check_logs(
                log.parent().unwrap_or(Path::new(".")),
                1,
                false,
            )?;
            let mut w = shards::data::journal_reader::open_window(log)?;
            messaging::durable::replay::replay_log(&mut w, &mut s)?;
            w.buffer_capacity()
        }
        "whole" => {
            // What it did before: the whole file, every record decoded, then applied.
            let bytes = engine::log_file::read_all(log)?;
            let check = record::replay(&bytes);
            drop(check);
            let replay = record::replay(&bytes);
            s.replay(replay.records);
            bytes.len()
        }
        m => anyhow::bail!("unknown mode {m}"),
    };
    let secs = started.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "mode": mode,
        "replay_s": secs,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": before_mib,
        "buffer_bytes": window_bytes,
        "queued": s.queued_total(),
    });
    println!("{line}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(c) = &a.child {
        return child(&c[0], Path::new(&c[1]));
    }
    let dir = a.dir.join(format!("replay-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = shards::data::journal_check::log_path(&dir, 0);
    let len = write_log(&log, &a)?;
    println!(
        "log {:.1} MB ({}% groups of {} members, {} B messages, {}‰ kept)",
        len as f64 / 1e6,
        a.groups_percent,
        a.members,
        a.body,
        a.kept_per_mille
    );
    println!("mode    replay_s  peak_rss_mib  buffer_bytes  queued");
    let mut result = format!("RESULT replay log_mb={:.1}", len as f64 / 1e6);
    for mode in ["stream", "whole"] {
        let out = std::process::Command::new(std::env::current_exe()?)
            .args(["--child", mode])
            .arg(&log)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        println!(
            "{mode:<7} {:>8.2}  {:>12.0}  {:>12}  {:>6}",
            v["replay_s"].as_f64().unwrap_or(0.0),
            v["peak_rss_mib"].as_f64().unwrap_or(0.0),
            v["buffer_bytes"],
            v["queued"],
        );
        let _ = write!(
            result,
            " {mode}_s={:.3} {mode}_peak_rss_mib={:.0} {mode}_buffer_bytes={}",
            v["replay_s"].as_f64().unwrap_or(0.0),
            v["peak_rss_mib"].as_f64().unwrap_or(0.0),
            v["buffer_bytes"],
        );
    }
    // For `bench`.
    println!("{result}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
