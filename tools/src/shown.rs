//! What a chat client already showed, so a message redelivered after a server crash is acked
//! but not shown twice.
//!
//! The server delivers a message before its record is durable; after a crash the sender
//! retries and the message comes again under a new server id, with the same
//! `(from, client_msg_id)`. This keeps the most recent `SHOWN_KEYS_MAX` such keys, in memory
//! and appended to a file beside the chat config (one `from client_msg_id` line each, mode
//! 0600), so the rule holds across `chat listen` runs too. The file is rewritten with only
//! the kept keys when it grows past twice that. A `client_msg_id` of 0 (older servers) is
//! never deduped. This module owns that file and nothing else.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Keys remembered: far more than one conversation's messages in flight at a crash.
pub const SHOWN_KEYS_MAX: usize = 4096;

/// The remembered keys, oldest first.
#[derive(Debug)]
pub struct Shown {
    keys: HashSet<(String, u64)>,
    order: VecDeque<(String, u64)>,
    file: Option<PathBuf>,
    lines_in_file: usize,
}

impl Shown {
    /// An empty memory that is not saved.
    pub fn in_memory() -> Self {
        Shown {
            keys: HashSet::new(),
            order: VecDeque::new(),
            file: None,
            lines_in_file: 0,
        }
    }

    /// The memory kept in `file` (missing or unreadable lines are skipped).
    pub fn load(file: &Path) -> Self {
        let mut s = Shown::in_memory();
        if let Ok(text) = std::fs::read_to_string(file) {
            for line in text.lines() {
                let mut parts = line.rsplitn(2, ' ');
                let (Some(cid), Some(from)) = (parts.next(), parts.next()) else {
                    continue;
                };
                if let Ok(cid) = cid.parse() {
                    s.remember(from.to_string(), cid);
                    s.lines_in_file += 1;
                }
            }
        }
        s.file = Some(file.to_path_buf());
        s
    }

    /// The file that goes with the chat config at `config`.
    pub fn path_for(config: &Path) -> PathBuf {
        config.with_extension("shown")
    }

    fn remember(&mut self, from: String, cid: u64) -> bool {
        let key = (from, cid);
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > SHOWN_KEYS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        true
    }

    /// Whether a message `(from, client_msg_id)` is shown for the first time (and remembers
    /// it). Saving failures are ignored: at worst a redelivery is shown again.
    pub fn first_time(&mut self, from: &str, client_msg_id: u64) -> bool {
        if client_msg_id == 0 {
            return true;
        }
        if !self.remember(from.to_string(), client_msg_id) {
            return false;
        }
        let _ = self.append(from, client_msg_id);
        true
    }

    fn append(&mut self, from: &str, cid: u64) -> std::io::Result<()> {
        let Some(path) = self.file.clone() else {
            return Ok(());
        };
        if self.lines_in_file >= 2 * SHOWN_KEYS_MAX {
            return self.rewrite(&path);
        }
        let mut f = open_private(&path, true)?;
        writeln!(f, "{from} {cid}")?;
        self.lines_in_file += 1;
        Ok(())
    }

    fn rewrite(&mut self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("shown.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        for (from, cid) in &self.order {
            writeln!(f, "{from} {cid}")?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        self.lines_in_file = self.order.len();
        Ok(())
    }
}

fn open_private(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redelivered_message_is_shown_once_also_in_a_later_run() {
        let dir = std::env::temp_dir().join(format!("sb-shown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = Shown::path_for(&dir.join("chat.toml"));
        let _ = std::fs::remove_file(&file);
        let mut s = Shown::load(&file);
        assert!(s.first_time("+15550000001", 7));
        assert!(!s.first_time("+15550000001", 7), "same sender and id");
        assert!(s.first_time("+15550000002", 7), "another sender");
        assert!(s.first_time("+15550000001", 0) && s.first_time("+15550000001", 0));
        let mut later = Shown::load(&file);
        assert!(
            !later.first_time("+15550000001", 7),
            "remembered across runs"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn memory_and_file_stay_bounded() {
        let dir = std::env::temp_dir().join(format!("sb-shown-b-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("x.shown");
        let _ = std::fs::remove_file(&file);
        let mut s = Shown::load(&file);
        for cid in 1..=(3 * SHOWN_KEYS_MAX as u64) {
            assert!(s.first_time("a", cid));
        }
        assert_eq!(s.order.len(), SHOWN_KEYS_MAX);
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        assert!(lines <= 2 * SHOWN_KEYS_MAX + 1, "{lines}");
        assert!(s.first_time("a", 1), "the oldest is forgotten");
    }
}
