//! The journal file as the replay window reads it: [`ReadAt`] over the engine's
//! [`LogReader`] (blocking positioned reads, used once at start-up before a shard serves,
//! and by the journal check). The window and the replay order are the messaging core's.

use std::path::Path;

use engine::log_file::{LogError, LogReader};
use messaging::durable::replay::{ReadAt, Window, REPLAY_WINDOW_BYTES};

/// A shard's journal file, read at offsets.
#[derive(Debug)]
pub struct JournalReader(LogReader);

impl ReadAt for JournalReader {
    type Error = LogError;

    fn len(&self) -> u64 {
        self.0.len()
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<(), LogError> {
        self.0.read_at(buf, at)
    }
}

/// Opens the journal at `path` with a window of [`REPLAY_WINDOW_BYTES`].
pub fn open_window(path: &Path) -> Result<Window<JournalReader>, LogError> {
    Ok(Window::new(
        JournalReader(LogReader::open(path)?),
        REPLAY_WINDOW_BYTES,
    ))
}
