//! Taking a batch off a client's stream of messages: what arrives within a
//! wait, then what keeps arriving without a wait.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_core::Stream;

/// The items of `stream` that arrive within `wait`: the first waited for,
/// then those ready at once or after a turn of the runtime, at most `max`;
/// `None` once the stream ended before any.
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
    let mut idle = 0;
    loop {
        let before = batch.len();
        take_ready(stream, &mut batch, max);
        idle = if batch.len() == before { idle + 1 } else { 0 };
        if batch.len() >= max || idle >= IDLE_ROUNDS {
            return Some(batch);
        }
        tokio::task::yield_now().await;
    }
}

/// How many turns of the runtime without a new item end a batch: the
/// client's own tasks (reading the socket, asking for more) get to run
/// between turns, so a batch grows while messages keep arriving.
const IDLE_ROUNDS: u32 = 2;

/// Adds the items of `stream` ready at once to `batch`, up to `max`.
fn take_ready<S: Stream + Unpin>(stream: &mut S, batch: &mut Vec<S::Item>, max: usize) {
    let mut context = Context::from_waker(Waker::noop());
    while batch.len() < max {
        match Pin::new(&mut *stream).poll_next(&mut context) {
            Poll::Ready(Some(item)) => batch.push(item),
            Poll::Ready(None) | Poll::Pending => break,
        }
    }
}
