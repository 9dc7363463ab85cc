//! `LISTEN` for appends made by other processes, so their processors wake.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::postgres::{PgListener, PgPool};

/// `LISTEN` on the append function's channel, by one task per store that
/// wakes every waiter on each notification. Waiters are raced against
/// timers and dropped all the time, so none of them owns the connection:
/// a dropped wait must not cancel a connect (see `sql::connection`).
#[derive(Debug)]
pub(super) struct Notifications {
    channel: String,
    listening: AtomicBool,
    received: event_listener::Event,
    /// Fired when the store's last clone is dropped, to end the task.
    closed: event_listener::Event,
}

impl Notifications {
    pub(super) fn new(channel: String) -> Self {
        Self {
            channel,
            listening: AtomicBool::new(false),
            received: event_listener::Event::new(),
            closed: event_listener::Event::new(),
        }
    }

    /// Resolves on the next notification, or when the listening connection
    /// is lost or cannot be made (waiters also poll, so a spurious wake-up
    /// only costs a read). Outside a tokio runtime it never resolves.
    pub(super) async fn wait(self: &Arc<Self>, pool: &PgPool) {
        let received = self.received.listen();
        if !self.listening.swap(true, Ordering::SeqCst) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(listen(Arc::downgrade(self), pool.clone()))),
                Err(_) => self.listening.store(false, Ordering::SeqCst),
            }
        }
        received.await;
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.closed.notify(usize::MAX);
    }
}

/// The listening task: connects, listens, passes notifications on, and
/// reconnects with a pause after a failure, until the store is dropped.
async fn listen(notifications: std::sync::Weak<Notifications>, pool: PgPool) {
    let pause = std::time::Duration::from_millis(500);
    loop {
        let Some((channel, closed)) = notifications
            .upgrade()
            .map(|notifications| (notifications.channel.clone(), notifications.closed.listen()))
        else {
            return;
        };
        let mut closed = std::pin::pin!(closed);
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(&channel).await {
                Ok(()) => Some(listener),
                Err(error) => {
                    tracing::warn!("cannot LISTEN for appends: {error}");
                    None
                }
            },
            Err(error) => {
                tracing::warn!("cannot connect to LISTEN for appends: {error}");
                None
            }
        };
        while let Some(connected) = listener.as_mut() {
            let received = {
                let mut received = std::pin::pin!(connected.recv());
                std::future::poll_fn(|context| {
                    if closed.as_mut().poll(context).is_ready() {
                        return std::task::Poll::Ready(None);
                    }
                    received.as_mut().poll(context).map(Some)
                })
                .await
            };
            let Some(notifications) = notifications.upgrade() else {
                return;
            };
            match received {
                None => return,
                Some(Ok(_)) => {
                    notifications.received.notify(usize::MAX);
                }
                Some(Err(error)) => {
                    tracing::warn!("lost the LISTEN connection: {error}");
                    notifications.received.notify(usize::MAX);
                    listener = None;
                }
            }
        }
        futures_timer::Delay::new(pause).await;
    }
}
