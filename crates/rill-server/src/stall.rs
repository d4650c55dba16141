//! Closes connections whose writes make no progress: a peer that stopped reading.
//!
//! The hub drops a subscriber that falls behind (its queue is bounded), but the socket itself
//! stays open while hyper waits to write what is already in flight: without this guard a stalled
//! client would keep its connection, its stream slot and its kernel buffers until it leaves.
//! Written here because no tower/hyper layer bounds the time a single write may stay pending
//! (hyper's timeouts cover reading headers, not writing bodies).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O object whose writes fail with `TimedOut` once one has been pending for `limit`.
pub(crate) struct StallGuard<IO> {
    io: IO,
    limit: Duration,
    /// Armed when a write first returns `Pending`; cleared by any write progress.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<IO> StallGuard<IO> {
    pub(crate) fn new(io: IO, limit: Duration) -> Self {
        StallGuard {
            io,
            limit,
            deadline: None,
        }
    }

    /// Maps a write poll: progress disarms the deadline, `Pending` arms it, an expired deadline
    /// turns `Pending` into an error (which makes hyper close the connection).
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer read nothing for too long",
                )))
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for StallGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StallGuard<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_pending_too_long_fails_and_progress_resets_the_clock() {
        // A pipe with a 16-byte buffer that nobody reads.
        let (client, mut server) = tokio::io::duplex(16);
        let mut guarded = StallGuard::new(client, Duration::from_secs(30));
        guarded.write_all(&[0; 16]).await.expect("fits the buffer");
        // Reading a little is progress: the next write goes through.
        let mut buf = [0; 8];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut buf)
            .await
            .expect("read");
        guarded.write_all(&[0; 8]).await.expect("progress");
        // Now nothing reads: the write stays pending until the limit, then fails.
        let error = guarded.write_all(&[0; 8]).await.expect_err("stalled");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
