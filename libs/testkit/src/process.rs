//! Binaries under test as separate processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1, for a process started later to listen on.
///
/// The port is taken from below the kernel's ephemeral range when it can be: a port the
/// kernel hands out with `bind(0)` is also one it may give to an outgoing connection in
/// the meantime, and then the process that should listen on it cannot. Ports are spread
/// by the process id and a counter, so that concurrent test processes rarely meet, and
/// each is checked free by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low().unwrap_or(32768);
    if low > 12_000 {
        let (start, span) = (10_000u32, u32::from(low) - 10_000);
        for _ in 0..64 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let candidate = start + (std::process::id().wrapping_mul(7919) + n * 101) % span;
            if let Ok(port) = u16::try_from(candidate) {
                if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                    return port;
                }
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The first port of the kernel's ephemeral range (Linux), if it can be read.
fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Sends `signal` (`TERM`, `KILL`, …) to a process.
pub fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
}

/// Waits up to `timeout` for a child to exit.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        anyhow::ensure!(
            Instant::now() < end,
            "process {} did not exit within {timeout:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A service binary listening on free ports (`BALLAST_LISTEN`, `BALLAST_ADMIN_LISTEN`),
/// configured by `BALLAST_*` variables; killed and reaped on drop.
#[derive(Debug)]
pub struct ServiceProcess {
    pub child: Child,
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The admin (metrics) address.
    pub admin: SocketAddr,
}

impl ServiceProcess {
    pub fn spawn(bin: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let child = Command::new(bin)
            .envs(env.iter().copied())
            .env("BALLAST_LISTEN", grpc.to_string())
            .env("BALLAST_ADMIN_LISTEN", admin.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawn {bin}: {e}"))?;
        Ok(Self { child, grpc, admin })
    }

    /// `http://` + the gRPC address.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig)
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("TERM");
        wait_exit(&mut self.child, timeout)
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process that printed a JSON ready line; killed on drop.
#[derive(Debug)]
pub struct ReadyProcess {
    pub child: Child,
    pub ready: serde_json::Value,
}

impl ReadyProcess {
    /// Spawns `bin args…` and waits (30 s at most) for its first stdout line, which must be
    /// JSON.
    pub fn spawn(bin: &str, args: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ready line within 30s");
        let ready = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("ready line is not JSON ({e}): {line:?}"));
        Self { child, ready }
    }

    /// A string field of the ready line.
    pub fn field(&self, key: &str) -> String {
        self.ready[key]
            .as_str()
            .unwrap_or_else(|| panic!("ready line lacks {key}: {}", self.ready))
            .to_string()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        signal(self.child.id(), "TERM");
        wait_exit(&mut self.child, timeout).expect("exit after SIGTERM")
    }
}

impl Drop for ReadyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` with stderr piped and waits up to `timeout` for its first stderr line that
/// contains `needle`. Returns the running child (the caller stops it) and that line, or
/// None when no such line came in time.
pub fn spawn_until_stderr(
    mut cmd: Command,
    needle: &'static str,
    timeout: Duration,
) -> anyhow::Result<(Child, Option<String>)> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("spawn: {e}"))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(needle) {
                let _ = tx.send(line);
                return;
            }
        }
    });
    Ok((child, rx.recv_timeout(timeout).ok()))
}
