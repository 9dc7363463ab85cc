//! Taking a batch off a client's stream of messages: what arrives within a
//! wait, then what is ready at once.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_core::Stream;

/// The items of `stream` that arrive within `wait`: the first waited for,
/// then those ready at once, at most `max`; `None` once the stream ended
/// before any.
pub(super) async fn ready<S: Stream + Unpin>(
    stream: &mut S,
    wait: Duration,
    max: usize,
) -> Option<Vec<S::Item>> {
    let first = std::future::poll_fn(|context| Pin::new(&mut *stream).poll_next(context));
    let Ok(first) = tokio::time::timeout(wait, first).await else {
        return Some(Vec::new());
    };
    let mut batch = vec![first?];
    let mut context = Context::from_waker(Waker::noop());
    while batch.len() < max {
        match Pin::new(&mut *stream).poll_next(&mut context) {
            Poll::Ready(Some(item)) => batch.push(item),
            Poll::Ready(None) | Poll::Pending => break,
        }
    }
    Some(batch)
}
