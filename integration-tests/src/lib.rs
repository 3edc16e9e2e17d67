//! Ballast's development and test harness: the `ballast-dev` binary and the end-to-end
//! tests in `tests/`.
//!
//! `ballast-dev` runs the embedded stack (`up`), chaos controls against it, the demo,
//! benchmarks and the torture run. Each subcommand lives in its own module; `main.rs`
//! only parses arguments. It runs the production binary (`ballast`) wherever it needs
//! the system as separate processes; [`ballast_bin`] finds it. [`stack`] starts
//! in-process stacks for the tests, and [`fuzz`] holds the fuzz targets' bodies.
//!
//! This crate may depend on every service crate: it is where they meet. Nothing depends
//! on it, and no production binary links it.

pub mod bench;
pub mod chaos;
pub mod control;
pub mod demo;
pub mod dev;
pub mod fuzz;
pub mod stack;
pub mod torture;

pub use stack::{
    send_until_acked, start_worker, topology_sees_brokers, Acked, GatewayStack, Worker,
};

/// The production binary the harnesses run as processes: `BALLAST_BIN`, or `ballast`
/// beside this binary (both are built into the same `target/` directory).
pub fn ballast_bin() -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("BALLAST_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", exe.display()))?;
    // Test binaries live one level down, in target/<profile>/deps.
    for dir in [dir, dir.parent().unwrap_or(dir)] {
        let path = dir.join(format!("ballast{}", std::env::consts::EXE_SUFFIX));
        if path.is_file() {
            return Ok(path);
        }
    }
    anyhow::bail!(
        "the production binary `ballast` is not beside {}: build it (cargo build -p ballast, \
         with --release for a release ballast-dev) or point BALLAST_BIN at it",
        exe.display()
    )
}
