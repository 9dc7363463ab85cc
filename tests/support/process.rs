//! Child processes of a suite: this same binary in a child role, its
//! stdout read line by line with the time each line arrived, asked to stop
//! through its stdin (it also stops when the suite dies and the pipe closes)
//! or ended with SIGKILL, paused and resumed, by its own pid; and
//! `run_suite`, which runs a suite's scenarios. The runner of the three
//! process suites (faults, scale_out, services), which include it by path.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A line a child printed, and when the suite read it.
pub struct Line {
    pub at: Instant,
    pub text: String,
}

pub struct Process {
    child: Child,
    pub lines: Receiver<Line>,
    stderr: Option<JoinHandle<String>>,
}

impl Process {
    /// Starts `current_exe child <args>`.
    pub fn spawn(args: &[String]) -> Self {
        let exe = std::env::current_exe().expect("the suite's own binary");
        let mut child = Command::new(exe)
            .arg("child")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("a child process");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender
                    .send(Line {
                        at: Instant::now(),
                        text,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        Self {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// Waits for a line equal to `text`, collecting the others.
    pub fn wait_for(&self, text: &str, timeout: Duration, seen: &mut Vec<Line>) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.text == text => return true,
                Ok(line) => seen.push(line),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Every line that arrived so far.
    pub fn drain(&self, seen: &mut Vec<Line>) {
        seen.extend(self.lines.try_iter());
    }

    /// Asks the child to finish its work and exit.
    pub fn stop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"stop\n");
            let _ = stdin.flush();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to this child's pid only.
    #[allow(dead_code, reason = "the fault suite never pauses its children")]
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        assert!(sent, "kill -s {signal} {}", self.child.id());
    }

    /// SIGKILL, to this child's pid only.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr()
    }

    /// Waits for the child to exit by itself; kills it past `timeout`.
    pub fn finish(mut self, timeout: Duration) -> (Option<ExitStatus>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return (Some(status), self.stderr()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return (None, self.stderr());
                }
            }
        }
    }

    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A suite that fails half-way leaves no child behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// In a child: set once the suite sends `stop` on stdin, or goes away (end
/// of file), so a child never outlives its suite.
pub fn stop_requested() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut line = String::new();
            while std::io::stdin()
                .read_line(&mut line)
                .is_ok_and(|read| read > 0)
            {
                if line.trim() == "stop" {
                    break;
                }
                line.clear();
            }
            stop.store(true, Ordering::SeqCst);
        }
    });
    stop
}

/// Runs a suite's scenarios (`run`, given the filter) on a runtime of two
/// workers, and exits with failure if any failed, saying how many.
pub fn run_suite<F: std::future::Future<Output = usize>>(
    suite: &str,
    args: &[String],
    run: impl FnOnce(Option<String>) -> F,
) -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let failures = runtime.block_on(run(scenario_filter(args)));
    if failures == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("{suite}: {failures} scenario(s) failed");
        std::process::ExitCode::FAILURE
    }
}

/// The scenarios to run: `cargo test --test <suite> -- <filter>` runs those
/// whose name contains it; libtest's own flags (and their values) are
/// passed over.
pub fn scenario_filter(args: &[String]) -> Option<String> {
    let mut filter = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--test-threads" | "--skip" | "--format" | "--color" | "-Z" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            name => filter = Some(name.to_owned()),
        }
    }
    filter
}

/// In a child: runs `app`'s processors, prints `ready`, then `status
/// <fenced> <owned>` every 100 ms from `processor`'s status (its batches
/// fenced off so far, its segments owned here), until the suite asks to
/// stop; then stops them and prints `done <fenced>`.
pub async fn run_node(app: &cqrs_core::Cqrs, processor: &str) {
    let counts = || {
        let status = app.processors().status();
        status
            .iter()
            .find(|status| status.name == processor)
            .map_or((0, 0), |status| {
                let owned = status.segments.iter().filter(|s| s.owned_here).count();
                (status.fenced, owned)
            })
    };
    let running = app.processors().run();
    let shutdown = running.shutdown();
    let task = tokio::spawn(running);
    let stop = stop_requested();
    println!("ready");
    while !stop.load(Ordering::SeqCst) {
        let (fenced, owned) = counts();
        println!("status {fenced} {owned}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.now().await;
    task.await.expect("the run").expect("one run");
    println!("done {}", counts().0);
}
