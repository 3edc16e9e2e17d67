//! Other real dependencies: `moto_server` (the SQS protocol) on a free port, and the
//! PostgreSQL server named by `DATABASE_URL`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `moto_server` process; killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
}

impl Moto {
    /// Starts moto_server on a free port; panics with how to install it.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts moto_server on a free port and waits (30 s at most) until it listens.
    pub fn try_start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("moto_server could not start ({e}): run scripts/dev-deps.sh (pip install 'moto[server]')")
            })?;
        let moto = Self {
            child: Some(child),
            port,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < end,
                "moto_server did not listen on {port} within 30s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An S3 client for this server (path-style, test credentials).
    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await;
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(true)
                .build(),
        )
    }

    /// The keys of every object in `bucket`, as moto's S3 lists them.
    pub async fn s3_keys(&self, bucket: &str) -> anyhow::Result<Vec<String>> {
        let out = self
            .s3()
            .await
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(out
            .contents
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| o.key)
            .collect())
    }

    /// Stops the server, as an outage would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The PostgreSQL URL for tests: `DATABASE_URL`, or the local server.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Panics with how to fix it when PostgreSQL is not reachable.
pub fn require_postgres() -> String {
    let url = database_url();
    let hostport = url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .to_string();
    if std::net::TcpStream::connect(&hostport).is_err() {
        panic!("PostgreSQL is not reachable at {hostport} ({url}): run scripts/dev-deps.sh or set DATABASE_URL");
    }
    url
}

/// The socket address of a URL's host and port (`scheme://[user@]host:port/...`), for
/// putting a fault proxy in front of a dependency. Panics on a URL without one.
pub fn hostport(url: &str) -> std::net::SocketAddr {
    let rest = url.split("://").nth(1).expect("a URL with a scheme");
    let rest = rest.rsplit('@').next().expect("a host");
    let hp = rest.split('/').next().expect("host:port");
    std::net::ToSocketAddrs::to_socket_addrs(hp)
        .unwrap_or_else(|e| panic!("{hp} does not resolve: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{hp} has no address"))
}

/// A unique name for a test's queue, table prefix or key prefix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), next_suffix())
}

fn next_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos * 1000 + N.fetch_add(1, Ordering::Relaxed)
}
