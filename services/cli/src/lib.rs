//! The all-in-one `ballast` CLI: the embedded dev stack, chaos controls against it, a
//! produce client and benchmarks. Each subcommand lives in its own module; `main.rs`
//! only parses arguments.

pub mod bench;
pub mod chaos;
pub mod consume;
pub mod control;
pub mod demo;
pub mod dev;
pub mod dlq;
pub mod produce;
pub mod topology;
pub mod torture;

/// Turns `host:port` into a gRPC endpoint URI.
pub mod secure;

pub fn endpoint(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}
