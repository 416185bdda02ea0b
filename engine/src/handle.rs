//! A way back into a shard from a task the service spawned (a log commit, say): the task
//! awaits its I/O, then calls `ShardHandle::with` to run a synchronous callback with the
//! service and its `ShardIo`, exactly as the engine's own callbacks do.
//!
//! Only for tasks on the same shard: a handle is neither `Send` nor `Sync`. This module
//! must not hold the shard's borrow across an await.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Weak;

use crate::service::Service;
use crate::shard_io::ShardCell;
use crate::shard_io::ShardIo;

/// A weak handle to the calling shard's service and engine state.
pub struct ShardHandle<S: Service> {
    pub(crate) cell: Weak<RefCell<ShardCell<S>>>,
}

impl<S: Service> Clone for ShardHandle<S> {
    fn clone(&self) -> Self {
        ShardHandle {
            cell: self.cell.clone(),
        }
    }
}

impl<S: Service> ShardHandle<S> {
    /// Runs `f` with the service and its `ShardIo`; `None` when the shard has stopped.
    /// Must not be called from inside another callback (the shard is borrowed then).
    pub fn with<R>(&self, f: impl FnOnce(&mut S, &mut ShardIo<S>) -> R) -> Option<R> {
        let cell = self.cell.upgrade()?;
        let mut c = cell.borrow_mut();
        let c = &mut *c;
        Some(f(&mut c.service, &mut c.io))
    }
}

impl<S: Service> ShardIo<S> {
    /// A handle for tasks spawned with [`ShardIo::spawn`].
    pub fn handle(&self) -> ShardHandle<S> {
        ShardHandle {
            cell: self.cell.clone(),
        }
    }

    /// Runs `fut` on this shard, starting after the current callback returns.
    pub fn spawn(&self, fut: impl Future<Output = ()> + 'static) {
        crate::ring::exec::spawn(fut);
    }
}
