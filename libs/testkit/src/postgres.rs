//! A throwaway PostgreSQL cluster with `ssl=on`, for tests of TLS to the failover queue:
//! `initdb` into a temp dir, the server certificate given to it, started with `pg_ctl` on
//! a free port (as the `postgres` user when the tests run as root, as PostgreSQL
//! requires), and stopped on drop.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory of PostgreSQL's server binaries (`initdb`, `pg_ctl`).
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.sort();
    found
        .into_iter()
        .rev()
        .find(|d| d.join("initdb").is_file())
        .context("initdb not found: run scripts/dev-deps.sh (apt-get install postgresql)")
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as `postgres` when we are root.
fn run(bin: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} {}: {}{}",
        bin.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A PostgreSQL cluster that accepts only TLS connections from 127.0.0.1 (`hostssl`,
/// trust), with the given certificate and key.
#[derive(Debug)]
pub struct PostgresTls {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

impl PostgresTls {
    pub fn start(cert_file: &Path, key_file: &Path) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(crate::deps::unique("ballast-pg-tls"));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir)?;
        if as_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()?;
            anyhow::ensure!(ok.success(), "chown {}", dir.display());
        }
        let data_s = data.display().to_string();
        run(
            &bin.join("initdb"),
            &["-D", &data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
        )?;
        // The server reads its key only if nobody else can.
        for (from, name) in [(cert_file, "server.crt"), (key_file, "server.key")] {
            std::fs::copy(from, data.join(name))?;
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )?;
        if as_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()?;
            anyhow::ensure!(ok.success(), "chown {}", data.display());
        }
        let mut perms = std::fs::metadata(data.join("server.key"))?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(data.join("server.key"), perms)?;
        let port = crate::process::free_port();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c ssl=on -c fsync=off",
            dir.display()
        );
        run(
            &bin.join("pg_ctl"),
            &[
                "-D",
                &data_s,
                "-o",
                &opts,
                "-w",
                "-t",
                "30",
                "-l",
                &format!("{}/log", dir.display()),
                "start",
            ],
        )?;
        Ok(Self { dir, bin, port })
    }

    /// A URL for database `postgres` at `host` (use a name the certificate carries), with
    /// `sslmode` and `sslrootcert`.
    pub fn url(&self, host: &str, sslmode: &str, root_cert: &Path) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?sslmode={sslmode}&sslrootcert={}",
            self.port,
            root_cert.display()
        )
    }
}

impl Drop for PostgresTls {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let _ = run(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
