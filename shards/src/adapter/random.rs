//! The OS's randomness for the state machines' [`RandomSource`] (PINs, ids): the one
//! syscall the messaging core needs, made here so the core stays free of I/O.

use messaging::state::RandomSource;

/// The OS's randomness.
pub fn os_random() -> RandomSource {
    Box::new(|buf: &mut [u8]| {
        let mut filled = 0;
        while filled < buf.len() {
            let rest = &mut buf[filled..];
            // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
            let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            // getrandom only fails before the pool is seeded at boot or on EINTR.
            assert!(
                n >= 0 || std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            );
            filled += n.max(0) as usize;
        }
    })
}
