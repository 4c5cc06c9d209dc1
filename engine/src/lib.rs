//! Herald's engines: the two things every role needs from its surroundings — a message
//! [`bus`] (publish, subscribe, request with "no responders") and a durable [`store`]
//! (accepted messages and their fate, user profiles, inboxes, topic histories, idempotency).
//!
//! Each is a trait with an embedded implementation ([`memory_bus`], [`sqlite`]) and a NATS
//! one (cluster engine). The contract tests in `tests/` run against every implementation.

pub mod bus;
pub mod hooks;
pub mod inbox;
pub mod jobs;
pub mod keys;
pub mod memory_bus;
pub mod sqlite;
pub mod store;

pub use bus::{Bus, BusError, BusMsg, PendingReply, RequestError, Subscription};
pub use hooks::{HookAttempt, HookDelivery, HookLease, HookSettle, WebhookRecord, Webhooks};
pub use inbox::{Inbox, InboxChange, InboxMarks};
pub use jobs::{Finished, Job, JobIndex, JobQueue, Lease, LocalQueue, Settle};
pub use keys::{ApiKeyRecord, Keys};
pub use memory_bus::MemoryBus;
pub use sqlite::SqliteStore;
pub use store::{DeviceRecord, Devices, History, HistoryPage, SlotTaken, Slots, Store, StoreError};
pub mod nats;
