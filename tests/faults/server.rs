//! A PostgreSQL server of the suite's own, in a temporary directory on a free
//! loopback port, so it can be stopped, restarted and made read-only without
//! touching anyone else's. Only this server's postmaster is signalled, through
//! `pg_ctl` on its own data directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Server {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    as_owner: Vec<String>,
}

impl Server {
    /// Initializes and starts a server, or says why it cannot.
    pub fn start() -> Result<Self, String> {
        let bindir =
            find_bindir().ok_or("no PostgreSQL server binaries under /usr/lib/postgresql")?;
        let dir = std::env::temp_dir().join(format!("cqrs-faults-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
        let as_owner = if root {
            // initdb refuses to run as root; the Debian package creates this user.
            run(Command::new("chown").arg("postgres").arg(&dir))?;
            vec![
                "runuser".to_owned(),
                "-u".to_owned(),
                "postgres".to_owned(),
                "--".to_owned(),
            ]
        } else {
            Vec::new()
        };
        let port = free_port();
        let server = Self {
            bindir,
            dir,
            port,
            as_owner,
        };
        server.tool(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        server.up()?;
        Ok(server)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn create_database(&self, name: &str) -> Result<(), String> {
        self.tool(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ],
        )
    }

    /// Stops the server at once, as a crash would: backends are killed mid-
    /// transaction, so commits in flight have an unknown outcome to clients.
    pub fn kill(&self) -> Result<(), String> {
        self.tool(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
    }

    pub fn up(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=200 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        )
    }

    /// Turns `default_transaction_read_only` on or off for every session,
    /// open ones included (a configuration reload reaches them).
    pub fn read_only(&self, on: bool) -> Result<(), String> {
        let value = if on { "on" } else { "off" };
        let sql = format!("ALTER SYSTEM SET default_transaction_read_only = {value}");
        self.psql(&sql)?;
        self.psql("SELECT pg_reload_conf()")
    }

    fn psql(&self, sql: &str) -> Result<(), String> {
        let url = self.url("postgres");
        self.tool(
            "psql",
            &["-q", "-X", "-v", "ON_ERROR_STOP=1", &url, "-c", sql],
        )
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn tool(&self, name: &str, args: &[&str]) -> Result<(), String> {
        let program = self.bindir.join(name);
        let mut command = match self.as_owner.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        command.args(args);
        run(&mut command).map_err(|error| format!("{name}: {error}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.tool("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn find_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|dir| dir.join("postgres").exists() && dir.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|dir| version_of(dir));
    dirs.pop()
}

fn version_of(bindir: &Path) -> u32 {
    bindir
        .parent()
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str())
        .and_then(|name| name.parse().ok())
        .unwrap_or(0)
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("an address").port();
    drop(listener);
    std::thread::sleep(Duration::from_millis(10));
    port
}
