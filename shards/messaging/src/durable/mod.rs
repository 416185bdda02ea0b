//! What survives a restart: the records the journal holds ([`record`]), group commit as pure
//! bookkeeping ([`journal`], generic over the file), the snapshot compaction writes
//! ([`snapshot`]) and start-up replay ([`replay`]). No file is opened here: the server owns
//! the files and hands in what implements the traits.

pub mod journal;
mod queue_rec;
pub mod record;
pub mod replay;
pub mod snapshot;
