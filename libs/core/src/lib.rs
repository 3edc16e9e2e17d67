//! Core types shared by every Ballast service: message ids, input validation and the
//! one error-code table that maps domain errors to per-record codes and gRPC statuses.
//!
//! This crate does no IO and holds no service logic.

mod code;
mod id;
mod time;
mod validate;

pub use code::{ErrorCode, RecordError};
pub use id::{new_message_id, MessageIds, MESSAGE_ID_HEADER};
pub use time::unix_ms;
pub use validate::{validate_message_id, validate_topic, ValidationError};
