//! One thread beside the shards that allocates and frees the big hash tables of their maps
//! (`steady_map.rs`), so that a shard never waits for the kernel's page work: giving back
//! an emptied table of a million entries (munmap of its touched pages) takes about 9 ms,
//! and making one (its control bytes set, page faults and all) 1–2 ms, both measured by
//! `just bench-state`.
//!
//! Shards hand it work over a channel and never wait for it: a table asked for and not
//! made yet is allocated where it is needed (a stall, as before this thread), and a table
//! nobody takes any more is freed here. Small tables never come here.
//!
//! This module runs the closures it is given and nothing else; it must not touch shard
//! state.

use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::OnceLock;

/// Tables at least this large are made and freed on the table thread.
pub const OFF_THREAD_BYTES: usize = 1 << 20;

type Work = Box<dyn FnOnce() + Send>;

/// The table thread's inbox, started on first use (`None` if it could not start: then
/// everything happens in place).
fn inbox() -> Option<&'static Sender<Work>> {
    static INBOX: OnceLock<Option<Sender<Work>>> = OnceLock::new();
    INBOX
        .get_or_init(|| {
            let (tx, rx) = channel::<Work>();
            std::thread::Builder::new()
                .name("sb-tables".into())
                .spawn(move || rx.into_iter().for_each(|work| work()))
                .ok()?;
            Some(tx)
        })
        .as_ref()
}

/// Frees `value` (about `bytes` large) on the table thread when it is large; here if not.
pub fn free<T: Send + 'static>(value: T, bytes: usize) {
    if bytes < OFF_THREAD_BYTES {
        return drop(value);
    }
    match inbox() {
        Some(inbox) => {
            // A send fails only if the thread is gone: then the value is freed here.
            let _ = inbox.send(Box::new(move || drop(value)));
        }
        None => drop(value),
    }
}

/// A value being made on the table thread.
#[derive(Debug)]
pub struct Coming<T> {
    rx: Receiver<T>,
    /// Arrived, not taken yet.
    arrived: Option<T>,
}

/// Where a [`Coming`] value stands.
#[derive(Debug)]
pub enum Made<T> {
    /// Made: here it is.
    Ready(T),
    /// Not made yet.
    Pending,
    /// It never will be (the thread is gone).
    Lost,
}

/// Starts making `make()` on the table thread; `None` if the thread could not start.
pub fn make<T: Send + 'static>(make: impl FnOnce() -> T + Send + 'static) -> Option<Coming<T>> {
    let (tx, rx) = channel();
    inbox()?
        .send(Box::new(move || {
            // Nobody waits any more: the value is dropped here, on this thread.
            let _ = tx.send(make());
        }))
        .ok()?;
    Some(Coming { rx, arrived: None })
}

impl<T> Coming<T> {
    /// The value, if it is made (never waits).
    pub fn try_take(&mut self) -> Made<T> {
        if let Some(v) = self.arrived.take() {
            return Made::Ready(v);
        }
        match self.rx.try_recv() {
            Ok(v) => Made::Ready(v),
            Err(TryRecvError::Empty) => Made::Pending,
            Err(TryRecvError::Disconnected) => Made::Lost,
        }
    }

    /// Whether it is still being made (never waits; what arrived stays for `try_take`).
    pub fn pending(&mut self) -> bool {
        match self.try_take() {
            Made::Ready(v) => {
                self.arrived = Some(v);
                false
            }
            Made::Pending => true,
            Made::Lost => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_made_there_arrives_and_one_given_up_on_is_freed_there() {
        let mut coming = make(|| vec![7u8; 2 * OFF_THREAD_BYTES]).expect("the thread starts");
        while coming.pending() {
            std::thread::yield_now();
        }
        let made = loop {
            match coming.try_take() {
                Made::Ready(v) => break v,
                Made::Pending => std::thread::yield_now(),
                Made::Lost => panic!("the thread is gone"),
            }
        };
        assert_eq!(made.len(), 2 * OFF_THREAD_BYTES);
        // Given up on before it is made: freed on the table thread, which goes on serving.
        drop(make(|| vec![1u8; OFF_THREAD_BYTES]));
        free(made, 2 * OFF_THREAD_BYTES);
        let mut again = make(|| 5u32).expect("still there");
        loop {
            match again.try_take() {
                Made::Ready(v) => break assert_eq!(v, 5),
                Made::Pending => std::thread::yield_now(),
                Made::Lost => panic!("the thread is gone"),
            }
        }
    }
}
