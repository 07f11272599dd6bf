//! Request bodies with an idle timeout: an upload whose client stops sending (but keeps the
//! connection open) must not hold its upload, memory and connection forever.
//!
//! [`idle`] wraps a body so that waiting more than the timeout for the client's next bytes ends
//! it with an error, and returns an [`Idle`] flag that tells the handler this was the reason
//! (the error itself may arrive wrapped, e.g. inside a multipart parser's or tonic's). Only
//! time spent waiting on the client counts: the clock starts when the server asks for more and
//! nothing is there, not while the server is busy writing what came (an fsync, a commit), and
//! it counts bytes, not messages (a 1 MiB gRPC message on a slow link is not idle).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Whether a body wrapped by [`idle`] was cut off for bringing nothing.
#[derive(Debug, Clone, Default)]
pub struct Idle(Arc<AtomicBool>);

impl Idle {
    /// The body was cut off by its idle timeout.
    pub fn fired(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The error a body ends with when it was idle too long.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}")]
pub struct IdleTimeout(Duration);

/// `body`, ended with [`IdleTimeout`] after `timeout` without a frame.
pub fn idle(body: Body, timeout: Duration) -> (Body, Idle) {
    let flag = Idle::default();
    let wrapped = IdleBody {
        inner: body,
        timeout,
        sleep: Box::pin(tokio::time::sleep(timeout)),
        flag: flag.clone(),
        done: false,
        armed: false,
    };
    (Body::new(wrapped), flag)
}

struct IdleBody {
    inner: Body,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    flag: Idle,
    done: bool,
    /// The clock runs: the server asked for bytes and none were there.
    armed: bool,
}

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            self.armed = false;
            return Poll::Ready(frame);
        }
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.timeout;
            self.sleep.as_mut().reset(deadline);
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.done = true;
        self.flag.0.store(true, Ordering::Release);
        Poll::Ready(Some(Err(axum::Error::new(IdleTimeout(self.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn a_body_that_stops_sending_ends_after_the_timeout() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let (body, flag) = idle(body, Duration::from_millis(400));
        let mut stream = body.into_data_stream();
        tx.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), "abc");
        // 250 ms later a frame still arrives in time and resets the clock.
        tokio::time::sleep(Duration::from_millis(250)).await;
        tx.send(Ok(Bytes::from_static(b"def"))).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), "def");
        assert!(!flag.fired());
        let started = Instant::now();
        assert!(stream.next().await.unwrap().is_err());
        assert!(started.elapsed() >= Duration::from_millis(390), "{:?}", started.elapsed());
        assert!(flag.fired());
        assert!(stream.next().await.is_none());
        drop(tx);
    }

    #[tokio::test]
    async fn time_the_server_spends_elsewhere_does_not_count() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let (body, flag) = idle(body, Duration::from_millis(200));
        let mut stream = body.into_data_stream();
        tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), "a");
        // The server is busy for longer than the timeout (not reading); the client's next
        // bytes were there all along.
        tx.send(Ok(Bytes::from_static(b"b"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(stream.next().await.unwrap().unwrap(), "b");
        assert!(!flag.fired());
        drop(tx);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_body_that_ends_is_not_idle() {
        let (body, flag) = idle(Body::from("all of it"), Duration::from_millis(50));
        let bytes = axum::body::to_bytes(body, 1024).await.unwrap();
        assert_eq!(bytes, "all of it");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!flag.fired());
    }
}
