//! A write deadline for a media connection: a peer that stops reading (a download nobody
//! drains, slowloris on the way out) has its writes fail after `stall_ms` without progress,
//! which ends the connection and frees its slot. Reads pass through (hyper's header-read
//! deadline and the upload deadline bound those).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io` whose writes fail with `TimedOut` once one has waited `stall` without progress.
pub struct WriteDeadline<IO> {
    io: IO,
    stall: Duration,
    /// Armed while a write waits; disarmed by any progress.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Called once when the deadline fires.
    on_stall: Option<Box<dyn FnOnce()>>,
}

impl<IO> WriteDeadline<IO> {
    /// Wraps `io`; `on_stall` runs when the deadline fires.
    pub fn new(io: IO, stall: Duration, on_stall: impl FnOnce() + 'static) -> Self {
        WriteDeadline {
            io,
            stall,
            timer: None,
            on_stall: Some(Box::new(on_stall)),
        }
    }

    fn waited<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.timer = None;
            return r;
        }
        let stall = self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if timer.as_mut().poll(cx).is_ready() {
            if let Some(f) = self.on_stall.take() {
                f();
            }
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write(cx, buf);
        me.waited(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_flush(cx);
        me.waited(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_shutdown(cx);
        me.waited(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write_vectored(cx, bufs);
        me.waited(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
