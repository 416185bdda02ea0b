//! The media service's budgets, as bookkeeping with `now` passed in (no clock, no I/O):
//! uploads in progress per user, upload bytes per user per UTC day, and the disk budget
//! (bytes stored plus bytes reserved by uploads in progress). An upload reserves its slot's
//! size in all three before it reads a byte ([`Budgets::begin`]) and gives the reservation
//! back when it ends ([`Budgets::end`]); a stored object keeps its day bytes and disk bytes.
//! Owned by the media thread alone (an `Rc<RefCell<_>>` there): no lock.

use std::collections::HashMap;

/// Users tracked per day (day bytes) before new uploaders are refused as over budget: bounds
/// the table whatever signs up.
pub const MEDIA_USERS_TRACKED_MAX: usize = 1_000_000;
/// Milliseconds in a day.
const DAY_MS: u64 = 24 * 3600 * 1000;

/// Why an upload may not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user has `uploads_per_user_max` uploads in progress.
    Concurrent,
    /// The user's bytes for today would pass `user_bytes_per_day`.
    DailyBytes,
    /// Stored plus reserved bytes would pass `disk_bytes_max`.
    Disk,
}

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Upload bytes per user per UTC day.
    pub user_bytes_per_day: u64,
    /// Uploads in progress per user.
    pub uploads_per_user_max: u32,
    /// Stored plus reserved bytes.
    pub disk_bytes_max: u64,
}

/// What is used now.
#[derive(Debug)]
pub struct Budgets {
    limits: Limits,
    /// UTC day number `day_bytes` counts for.
    day: u64,
    /// Bytes each user uploaded (or reserved) today; cleared when the day changes.
    day_bytes: HashMap<u64, u64>,
    /// Uploads in progress per user; an entry leaves at 0.
    in_progress: HashMap<u64, u32>,
    /// Bytes of stored objects.
    stored_bytes: u64,
    /// Bytes reserved by uploads in progress.
    reserved_bytes: u64,
}

impl Budgets {
    /// Budgets with `stored_bytes` already on disk.
    pub fn new(limits: Limits, stored_bytes: u64) -> Budgets {
        Budgets {
            limits,
            day: 0,
            day_bytes: HashMap::new(),
            in_progress: HashMap::new(),
            stored_bytes,
            reserved_bytes: 0,
        }
    }

    /// Reserves an upload of `size` bytes for `user`.
    pub fn begin(&mut self, user: u64, size: u64, now_ms: u64) -> Result<(), Refusal> {
        if now_ms / DAY_MS != self.day {
            self.day = now_ms / DAY_MS;
            self.day_bytes.clear();
        }
        let running = self.in_progress.get(&user).copied().unwrap_or(0);
        if running >= self.limits.uploads_per_user_max {
            return Err(Refusal::Concurrent);
        }
        let today = self.day_bytes.get(&user).copied().unwrap_or(0);
        let tracked = self.day_bytes.contains_key(&user);
        if today.saturating_add(size) > self.limits.user_bytes_per_day
            || (!tracked && self.day_bytes.len() >= MEDIA_USERS_TRACKED_MAX)
        {
            return Err(Refusal::DailyBytes);
        }
        let used = self.stored_bytes.saturating_add(self.reserved_bytes);
        if used.saturating_add(size) > self.limits.disk_bytes_max {
            return Err(Refusal::Disk);
        }
        *self.in_progress.entry(user).or_insert(0) += 1;
        *self.day_bytes.entry(user).or_insert(0) += size;
        self.reserved_bytes += size;
        Ok(())
    }

    /// Ends an upload [`Budgets::begin`] reserved: `stored` if its object is now on disk
    /// (a new file; `false` also when the object was there already).
    pub fn end(&mut self, user: u64, size: u64, stored: bool) {
        self.reserved_bytes = self.reserved_bytes.saturating_sub(size);
        if let Some(n) = self.in_progress.get_mut(&user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_progress.remove(&user);
            }
        }
        if stored {
            self.stored_bytes += size;
        } else if let Some(b) = self.day_bytes.get_mut(&user) {
            // A failed upload does not spend the day's bytes.
            *b = b.saturating_sub(size);
        }
    }

    /// An object of `size` bytes was deleted (retention).
    pub fn deleted(&mut self, size: u64) {
        self.stored_bytes = self.stored_bytes.saturating_sub(size);
    }

    /// Bytes of stored objects.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        user_bytes_per_day: 100,
        uploads_per_user_max: 2,
        disk_bytes_max: 150,
    };

    #[test]
    fn concurrent_uploads_per_user_are_bounded_and_given_back() {
        let mut b = Budgets::new(LIMITS, 0);
        b.begin(1, 10, 0).unwrap();
        b.begin(1, 10, 0).unwrap();
        assert_eq!(b.begin(1, 10, 0), Err(Refusal::Concurrent));
        b.begin(2, 10, 0).unwrap();
        b.end(1, 10, true);
        b.begin(1, 10, 0).unwrap();
    }

    #[test]
    fn day_bytes_are_spent_by_stored_uploads_and_renewed_each_day() {
        let mut b = Budgets::new(LIMITS, 0);
        b.begin(1, 60, 0).unwrap();
        b.end(1, 60, true);
        assert_eq!(b.begin(1, 50, 1), Err(Refusal::DailyBytes));
        b.begin(1, 40, 1).unwrap();
        b.end(1, 40, false); // failed: the 40 come back
        b.begin(1, 40, 2).unwrap();
        b.end(1, 40, false);
        b.deleted(60);
        b.begin(1, 100, DAY_MS).unwrap();
    }

    #[test]
    fn the_disk_budget_counts_stored_and_reserved_bytes() {
        let mut b = Budgets::new(LIMITS, 100);
        b.begin(1, 40, 0).unwrap();
        assert_eq!(b.begin(2, 20, 0), Err(Refusal::Disk));
        b.end(1, 40, false);
        b.begin(2, 20, 0).unwrap();
        b.end(2, 20, true);
        assert_eq!(b.stored_bytes(), 120);
        b.deleted(120);
        assert_eq!(b.stored_bytes(), 0);
    }
}
