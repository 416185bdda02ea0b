//! The few futures a shard runs, and short sleeps.
//!
//! Connections have no task: the shard loop drives them from completions. What is left as a
//! future is the service's own background work (a log append and its sync, a compaction, a
//! commit window's sleep), spawned through [`crate::ShardIo::spawn`]. Those run here: a slab
//! of boxed futures and a ready queue, both thread-local. A waker names its task by slot and
//! generation, so waking a finished task does nothing; waking from another thread is an
//! engine bug and panics (nothing off the shard thread holds these wakers).
//!
//! [`block_on`] runs one future to completion on the calling thread with a ring of its own:
//! for tools and tests that use the log file outside a shard.
//!
//! This module must not touch connections, the mesh or the service.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// Generations and slots fit in a waker's data word with the owning thread's tag.
const INDEX_BITS: u32 = 24;
const GEN_BITS: u32 = 24;

#[derive(Default)]
struct Tasks {
    slots: Vec<Option<Task>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    /// Tasks alive (spawned and not finished).
    live: usize,
}

thread_local! {
    static TASKS: RefCell<Tasks> = RefCell::new(Tasks::default());
    static READY: RefCell<VecDeque<u64>> = const { RefCell::new(VecDeque::new()) };
    static SLEEPS: RefCell<Vec<(Instant, Waker)>> = const { RefCell::new(Vec::new()) };
    /// Tasks that yielded the rest of this turn ([`yield_turn`]): woken by the next
    /// [`run_ready`], after the loop has been to the kernel once.
    static NEXT_TURN: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
    /// A number unique to this thread, carried in its wakers.
    static THREAD_TAG: Cell<u64> = const { Cell::new(0) };
}

static NEXT_THREAD_TAG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn thread_tag() -> u64 {
    THREAD_TAG.with(|t| {
        if t.get() == 0 {
            // Once per thread, at its first spawn: not on the per-frame path.
            #[allow(clippy::disallowed_methods)]
            let n = NEXT_THREAD_TAG.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            t.set(n & 0xffff);
        }
        t.get()
    })
}

fn pack(index: u32, generation: u32) -> u64 {
    (thread_tag() << (INDEX_BITS + GEN_BITS))
        | (u64::from(generation & ((1 << GEN_BITS) - 1)) << INDEX_BITS)
        | u64::from(index)
}

fn unpack(word: u64) -> (u64, u32, u32) {
    let index = (word & ((1 << INDEX_BITS) - 1)) as u32;
    let generation = ((word >> INDEX_BITS) & ((1 << GEN_BITS) - 1)) as u32;
    (word >> (INDEX_BITS + GEN_BITS), index, generation)
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_raw, wake_raw, wake_raw, drop_raw);

fn clone_raw(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake_raw(data: *const ()) {
    let word = data as u64;
    let (tag, ..) = unpack(word);
    assert_eq!(
        tag,
        thread_tag(),
        "a shard task was woken from another thread"
    );
    READY.with(|r| r.borrow_mut().push_back(word));
}

fn drop_raw(_: *const ()) {}

fn waker_for(word: u64) -> Waker {
    // SAFETY: the vtable functions treat `data` as a plain number, never as a pointer.
    unsafe { Waker::from_raw(RawWaker::new(word as *const (), &VTABLE)) }
}

/// Spawns `fut` on this thread; it first runs at the next [`run_ready`], never inside the
/// caller (callers hold the shard's borrow).
pub(crate) fn spawn(fut: impl Future<Output = ()> + 'static) {
    let word = TASKS.with(|t| {
        let mut t = t.borrow_mut();
        let index = match t.free.pop() {
            Some(i) => i,
            None => {
                t.slots.push(None);
                t.generations.push(0);
                (t.slots.len() - 1) as u32
            }
        };
        assert!(index < (1 << INDEX_BITS), "too many shard tasks");
        t.slots[index as usize] = Some(Box::pin(fut));
        t.live += 1;
        pack(index, t.generations[index as usize])
    });
    READY.with(|r| r.borrow_mut().push_back(word));
}

/// Drops every task of this thread (shard exit), while the thread's other state (the ops'
/// slots their futures hold) still exists.
pub(crate) fn drop_all() {
    let tasks = TASKS.with(|t| std::mem::take(&mut *t.borrow_mut()));
    drop(tasks);
    READY.with(|r| r.borrow_mut().clear());
    SLEEPS.with(|s| s.borrow_mut().clear());
    NEXT_TURN.with(|n| n.borrow_mut().clear());
}

/// Whether a task is waiting to run (now, or at the next turn).
pub(crate) fn has_ready() -> bool {
    READY.with(|r| !r.borrow().is_empty()) || NEXT_TURN.with(|n| !n.borrow().is_empty())
}

/// Polls every ready task once (tasks woken meanwhile run too, up to a bound); returns how
/// many polls it made.
pub(crate) fn run_ready() -> usize {
    let yielded = NEXT_TURN.with(|n| std::mem::take(&mut *n.borrow_mut()));
    yielded.into_iter().for_each(Waker::wake);
    let mut polls = 0;
    // A task that wakes itself on every poll must not starve the shard's I/O.
    let bound = READY.with(|r| r.borrow().len()) + 64;
    while polls < bound {
        let Some(word) = READY.with(|r| r.borrow_mut().pop_front()) else {
            break;
        };
        let (_, index, generation) = unpack(word);
        let fut = TASKS.with(|t| {
            let mut t = t.borrow_mut();
            let matches = t
                .generations
                .get(index as usize)
                .is_some_and(|g| g & ((1 << GEN_BITS) - 1) == generation);
            if matches {
                t.slots[index as usize].take()
            } else {
                None
            }
        });
        // Finished, or already taken by an earlier wake in this pass.
        let Some(mut fut) = fut else { continue };
        polls += 1;
        let waker = waker_for(word);
        let mut cx = Context::from_waker(&waker);
        let done = fut.as_mut().poll(&mut cx).is_ready();
        TASKS.with(|t| {
            let mut t = t.borrow_mut();
            if done {
                t.generations[index as usize] = t.generations[index as usize].wrapping_add(1);
                t.free.push(index);
                t.live -= 1;
            } else {
                t.slots[index as usize] = Some(fut);
            }
        });
    }
    polls
}

/// Wakes every sleep that is due; returns the earliest one still waiting.
pub(crate) fn fire_sleeps(now: Instant) -> Option<Instant> {
    SLEEPS.with(|s| {
        let mut s = s.borrow_mut();
        let mut next: Option<Instant> = None;
        s.retain(|(at, w)| {
            if *at <= now {
                w.wake_by_ref();
                false
            } else {
                next = Some(next.map_or(*at, |n| n.min(*at)));
                true
            }
        });
        next
    })
}

/// Resolves once `d` has passed (to within the shard loop's wake-up: a few µs when idle).
pub fn sleep(d: Duration) -> Sleep {
    Sleep {
        at: Instant::now() + d,
    }
}

/// The future [`sleep`] returns.
#[derive(Debug)]
pub struct Sleep {
    at: Instant,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        SLEEPS.with(|s| s.borrow_mut().push((self.at, cx.waker().clone())));
        Poll::Pending
    }
}

/// Resolves at the next turn of the loop, after it has been to the kernel (without
/// waiting there, since a task is due): for work done in slices between events, so that
/// I/O completions and frames are handled between any two slices.
pub fn yield_turn() -> YieldTurn {
    YieldTurn { yielded: false }
}

/// The future [`yield_turn`] returns.
#[derive(Debug)]
pub struct YieldTurn {
    yielded: bool,
}

impl Future for YieldTurn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        NEXT_TURN.with(|n| n.borrow_mut().push(cx.waker().clone()));
        Poll::Pending
    }
}

/// Runs `fut` to completion on the calling thread, with a ring of the thread's own for its
/// I/O: for tools and tests that use the log file outside a shard. Must not be called on a
/// shard thread.
pub fn block_on<T: 'static>(fut: impl Future<Output = T> + 'static) -> std::io::Result<T> {
    super::install()?;
    let out = std::rc::Rc::new(RefCell::new(None));
    let slot = out.clone();
    spawn(async move {
        let v = fut.await;
        *slot.borrow_mut() = Some(v);
    });
    let mut completions = Vec::new();
    loop {
        run_ready();
        if let Some(v) = out.borrow_mut().take() {
            return Ok(v);
        }
        let next = fire_sleeps(Instant::now());
        let timeout = if has_ready() {
            Duration::ZERO
        } else {
            next.map_or(Duration::from_millis(100), |at| {
                at.saturating_duration_since(Instant::now())
            })
        };
        super::with(|r| r.enter(timeout, Duration::ZERO, &mut completions))?;
        for c in completions.drain(..) {
            if let (Some(super::Tag::Op), low) = super::split(c.user_data) {
                super::ops::complete(low, c.result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn a_yielding_task_runs_once_per_turn_and_keeps_the_loop_from_waiting() {
        let polls = Rc::new(Cell::new(0u32));
        let seen = polls.clone();
        spawn(async move {
            for _ in 0..3 {
                seen.set(seen.get() + 1);
                yield_turn().await;
            }
            seen.set(seen.get() + 1);
        });
        for turn in 1..=3 {
            run_ready();
            assert_eq!(polls.get(), turn, "one slice per turn, not one per pass");
            assert!(
                has_ready(),
                "a yielded task must keep the loop from waiting"
            );
        }
        run_ready();
        assert_eq!(polls.get(), 4);
        assert!(!has_ready(), "finished: nothing left to run");
        drop_all();
    }
}
