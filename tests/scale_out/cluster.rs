//! The nodes of a scenario, as child processes, and who owns which segment
//! as the store says.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cqrs_core::ViewStore;

use super::process::{Line, Process};

/// Nodes started with the same arguments, each with an id of its own.
pub struct Cluster {
    args: Vec<String>,
    pub nodes: Vec<Node>,
    started: usize,
}

pub struct Node {
    pub id: String,
    process: Process,
    lines: Vec<Line>,
}

impl Cluster {
    pub fn new(args: &[&str]) -> Self {
        Self {
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            nodes: Vec::new(),
            started: 0,
        }
    }

    /// Starts one more node, and waits until it runs.
    pub fn start(&mut self) -> Result<&Node, String> {
        let id = format!("node-{}", self.started);
        self.started += 1;
        let mut args = self.args.clone();
        args.extend(["--id".to_owned(), id.clone()]);
        let process = Process::spawn(&args);
        let mut lines = Vec::new();
        if !process.wait_for("ready", Duration::from_secs(60), &mut lines) {
            let (_, stderr) = process.finish(Duration::ZERO);
            return Err(format!("{id} did not start: {stderr}"));
        }
        self.nodes.push(Node { id, process, lines });
        Ok(self.nodes.last().expect("just pushed"))
    }

    /// SIGKILLs the node at `index`: its claims stay until their leases
    /// run out. Returns its id.
    pub fn kill(&mut self, index: usize) -> String {
        let node = self.nodes.remove(index);
        let stderr = node.process.kill();
        if stderr.contains("panicked") {
            eprintln!("{} panicked before it was killed: {stderr}", node.id);
        }
        node.id
    }

    /// Asks every node to stop and waits for each; returns the batches of
    /// each that were fenced off, by id.
    pub fn stop(self) -> Result<BTreeMap<String, u64>, String> {
        let mut fenced = BTreeMap::new();
        let mut nodes = self.nodes;
        for node in &mut nodes {
            node.process.stop();
        }
        for mut node in nodes {
            let deadline = Instant::now() + Duration::from_secs(60);
            let done = loop {
                match node
                    .process
                    .lines
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    Ok(line) if line.text.starts_with("done ") => break Some(line.text),
                    Ok(line) => node.lines.push(line),
                    Err(_) => break None,
                }
            };
            let (status, stderr) = node.process.finish(Duration::from_secs(30));
            let Some(done) = done else {
                return Err(format!("{} did not stop: {status:?} {stderr}", node.id));
            };
            if stderr.contains("panicked") {
                return Err(format!("{} panicked: {stderr}", node.id));
            }
            fenced.insert(node.id, done[5..].parse().unwrap_or(0));
        }
        Ok(fenced)
    }
}

impl Node {
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// The node's last `status` line: batches fenced off, segments owned.
    pub fn status(&mut self) -> (u64, usize) {
        self.process.drain(&mut self.lines);
        self.lines
            .iter()
            .rev()
            .find_map(|line| {
                let mut words = line.text.strip_prefix("status ")?.split(' ');
                Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
            })
            .unwrap_or((0, 0))
    }
}

/// How many segments of `processor` each node holds a live lease on.
pub async fn owners(views: &ViewStore, processor: &str) -> Result<BTreeMap<String, usize>, String> {
    let mut owners = BTreeMap::new();
    for segment in views
        .segments(processor)
        .await
        .map_err(|error| error.to_string())?
    {
        if let Some(owner) = segment.owner.filter(|_| !segment.expired) {
            *owners.entry(owner).or_insert(0) += 1;
        }
    }
    Ok(owners)
}

/// Polls `condition` every 50 ms until it holds, for at most `limit`;
/// returns how long it took.
pub async fn within<F>(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> F,
) -> Result<Duration, String>
where
    F: Future<Output = Result<bool, String>>,
{
    let started = Instant::now();
    loop {
        if condition().await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(format!("not within {limit:?}: {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
