//! The cluster's processes: each runs detached (its own session, so it outlives `up`), inside
//! the cluster's network namespace, with its output in `logs/<name>.log`.

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A started component.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub pid: i32,
    pub log: PathBuf,
}

impl Component {
    pub fn alive(&self) -> bool {
        pid_alive(self.pid)
    }

    /// The last lines of the component's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// An error that names the component and its log.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{} {what}; its log is {}. Last lines:\n{}",
            self.name,
            self.log.display(),
            self.log_tail(15)
        )
    }
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); its /proc state says it is gone.
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts `program` in the network namespace `netns` (a name under /run/netns), detached.
pub fn start(
    name: &str,
    netns: &str,
    program: &Path,
    args: &[OsString],
    logs: &Path,
    env: &[(&str, &str)],
) -> Result<Component> {
    std::fs::create_dir_all(logs)?;
    let log = logs.join(format!("{name}.log"));
    // Appended to: a restarted component keeps its earlier life's log (a new cluster starts
    // with an empty log directory).
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    // setsid: a new session, so the component survives `up` and no terminal signal reaches it.
    // nsenter --net only (not `ip netns exec`, which would also give it a private mount
    // namespace and a remounted /sys: kubelet, containerd and the plugins must share mounts).
    let mut command = Command::new("setsid");
    command
        .arg("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {name} ({})", program.display()))?;
    // setsid and nsenter exec in place (the child is no group leader, and no pid namespace is
    // entered), so the child's pid is the component's.
    let component = Component {
        name: name.to_owned(),
        pid: child.id() as i32,
        log,
    };
    // The child is reaped by init once `up` exits; dropping the handle does not kill it.
    drop(child);
    Ok(component)
}

/// Polls `ready` until it answers true, failing early when the component dies.
pub fn wait_ready(
    component: &Component,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if !component.alive() {
            return Err(component.failure(&format!("exited before {what}")));
        }
        if Instant::now() >= deadline {
            return Err(component.failure(&format!("did not become {what} within {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Stops a process: SIGTERM, then SIGKILL after `grace`.
pub fn stop(pid: i32, grace: Duration) {
    if !pid_alive(pid) {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if pid_alive(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs a command to completion, failing with its output.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
