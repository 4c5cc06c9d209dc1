//! The bus contract, shaped after NATS core: fire-and-forget publish, subscriptions that
//! feed a caller-owned bounded channel, and requests that learn at once when nobody listens.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// One message on the bus.
#[derive(Debug, Clone)]
pub struct BusMsg {
    pub subject: String,
    pub reply: Option<String>,
    pub payload: Bytes,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("the bus is closed")]
    Closed,
    #[error("bus error: {0}")]
    Other(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// Nobody is subscribed to the subject: for a user subject, the user is offline.
    #[error("no responders")]
    NoResponders,
    #[error("no reply in time")]
    Timeout,
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// A request already on its way; [`PendingReply::wait`] waits for its first reply.
pub struct PendingReply {
    rx: oneshot::Receiver<Result<Bytes, RequestError>>,
    _cleanup: Option<CleanupGuard>,
}

/// Runs a closure on drop (used to forget a reply slot after a timeout).
pub struct CleanupGuard(Option<Box<dyn FnOnce() + Send + Sync>>);

impl CleanupGuard {
    pub fn new(f: impl FnOnce() + Send + Sync + 'static) -> Self {
        CleanupGuard(Some(Box::new(f)))
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl PendingReply {
    pub fn new(
        rx: oneshot::Receiver<Result<Bytes, RequestError>>,
        cleanup: Option<CleanupGuard>,
    ) -> Self {
        PendingReply {
            rx,
            _cleanup: cleanup,
        }
    }

    /// An already-answered request.
    pub fn ready(result: Result<Bytes, RequestError>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        PendingReply::new(rx, None)
    }

    pub async fn wait(self, timeout: Duration) -> Result<Bytes, RequestError> {
        match tokio::time::timeout(timeout, self.rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RequestError::Bus(BusError::Closed)),
            Err(_) => Err(RequestError::Timeout),
        }
    }
}

/// Keeps a subscription alive; dropping it unsubscribes.
pub struct Subscription {
    _guard: CleanupGuard,
}

impl Subscription {
    pub fn new(guard: CleanupGuard) -> Self {
        Subscription { _guard: guard }
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes to every current subscriber of `subject`; nobody listening is not an error.
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;

    /// Publishes a request. When this returns, the request is ordered after every earlier
    /// publish from this process; the reply (or "no responders") arrives through the result.
    async fn request(&self, subject: &str, payload: Bytes) -> Result<PendingReply, BusError>;

    /// Publishes a request and collects every reply that arrives within `window` (none if
    /// nobody listens; then it returns at once).
    async fn gather(
        &self,
        subject: &str,
        payload: Bytes,
        window: Duration,
    ) -> Result<Vec<Bytes>, BusError>;

    /// Feeds every message on `subject` into `sink` (never awaiting it: a full sink drops the
    /// message, as a slow NATS subscriber would). Exact subjects only.
    async fn subscribe(
        &self,
        subject: &str,
        sink: mpsc::Sender<BusMsg>,
    ) -> Result<Subscription, BusError>;

    /// Like [`Bus::subscribe`], but each message goes to only one member of `group`.
    async fn queue_subscribe(
        &self,
        subject: &str,
        group: &str,
        sink: mpsc::Sender<BusMsg>,
    ) -> Result<Subscription, BusError>;

    /// Whether the bus can carry messages now (for `/readyz`).
    fn is_ready(&self) -> bool;
}
