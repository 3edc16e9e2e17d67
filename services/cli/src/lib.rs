//! `ballast`: the operator CLI (produce, consume, dlq, topology and the spot watcher) and
//! the four services as subcommands. This is what production runs; the development and
//! test tools live in `ballast-dev`, and nothing here depends on the test harnesses.
//! Each subcommand lives in its own module; `main.rs` only parses arguments.

pub mod consume;
pub mod dlq;
pub mod produce;
pub mod topology;
