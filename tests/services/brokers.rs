//! A RabbitMQ node or a NATS server of the suite's own, on a free port of
//! 127.0.0.1, with its data in a directory of the suite's: started,
//! stopped by its pid and started again on the same port and data.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub enum Kind {
    RabbitMq,
    Nats,
}

pub struct Broker {
    kind: Kind,
    program: PathBuf,
    dir: PathBuf,
    pub port: u16,
    dist_port: u16,
    child: Option<Child>,
}

/// The program that runs the broker, if it is installed.
pub fn program(kind: &Kind) -> Option<PathBuf> {
    let candidates: &[&str] = match kind {
        Kind::RabbitMq => &[
            "/usr/lib/rabbitmq/bin/rabbitmq-server",
            "/usr/sbin/rabbitmq-server",
        ],
        Kind::Nats => &[
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ],
    };
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

impl Broker {
    pub fn start(kind: Kind, program: PathBuf, dir: &Path) -> Result<Self, String> {
        let mut broker = Self {
            kind,
            program,
            dir: dir.to_owned(),
            port: free_port(),
            dist_port: free_port(),
            child: None,
        };
        broker.run()?;
        Ok(broker)
    }

    pub fn url(&self) -> String {
        match self.kind {
            Kind::RabbitMq => format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join("broker.log")).map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.program);
        match self.kind {
            Kind::RabbitMq => {
                for sub in ["mnesia", "log"] {
                    std::fs::create_dir_all(self.dir.join(sub)).map_err(|e| e.to_string())?;
                }
                let write = |name: &str, text: String| {
                    std::fs::write(self.dir.join(name), text).map_err(|e| e.to_string())
                };
                write("enabled_plugins", String::new())?;
                write("rabbitmq-env.conf", String::new())?;
                write(
                    "rabbitmq.conf",
                    format!("listeners.tcp.local = 127.0.0.1:{}\n", self.port),
                )?;
                command
                    .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
                    .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
                    .env(
                        "RABBITMQ_NODENAME",
                        format!("cqrs-services-{}@localhost", self.port),
                    )
                    .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
                    .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
                    .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
                    .env(
                        "RABBITMQ_ENABLED_PLUGINS_FILE",
                        self.dir.join("enabled_plugins"),
                    );
            }
            Kind::Nats => {
                command.args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ]);
                command.arg(self.dir.join("nats"));
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|error| format!("{}: {error}", self.program.display()))?;
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > Duration::from_secs(90) {
                let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
                return Err(format!("the broker did not listen within 90 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Stops it (SIGTERM to its pid, then SIGKILL after 60 s) and waits.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        // The port is free again once nothing listens.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it and starts it again on the same port and data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.run()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
