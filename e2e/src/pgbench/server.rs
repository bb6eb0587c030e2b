//! A PostgreSQL server for the benchmark: its own data directory and unix socket, run as the
//! `postgres` user inside a memory cgroup of its own.

use super::{PgbenchError, Plan, Run, parse_output};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The newest PostgreSQL's binaries (Debian keeps them in `/usr/lib/postgresql/<major>/bin`).
pub fn bin_dir() -> Result<PathBuf, PgbenchError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| PgbenchError::NotInstalled)?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(PgbenchError::NotInstalled)
}

fn run_command(what: &str, command: &mut Command) -> Result<String, PgbenchError> {
    let output = command.output().map_err(|e| PgbenchError::Command {
        what: what.to_owned(),
        detail: e.to_string(),
    })?;
    if !output.status.success() {
        return Err(PgbenchError::Command {
            what: what.to_owned(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `program` run as the `postgres` user (PostgreSQL refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
    command
}

/// A memory cgroup (v1 `memory`, or v2 with the memory controller) with a limit; its processes
/// are killed and it is removed on drop.
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    pub fn create(name: &str, limit_bytes: u64) -> Result<Self, PgbenchError> {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (dir, limit_file) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(name), "memory.limit_in_bytes")
        } else {
            let unified = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
                .into_iter()
                .map(Path::new)
                .find(|root| {
                    std::fs::read_to_string(root.join("cgroup.subtree_control"))
                        .is_ok_and(|c| c.split_whitespace().any(|n| n == "memory"))
                })
                .ok_or_else(|| {
                    PgbenchError::Setup(
                        "no memory cgroup controller (v1 memory, or v2 with memory enabled at the root)"
                            .into(),
                    )
                })?;
            (unified.join(name), "memory.max")
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| PgbenchError::Setup(format!("creating {}: {e}", dir.display())))?;
        let cgroup = Self { dir };
        std::fs::write(cgroup.dir.join(limit_file), limit_bytes.to_string()).map_err(|e| {
            PgbenchError::Setup(format!(
                "setting {} in {}: {e}",
                limit_file,
                cgroup.dir.display()
            ))
        })?;
        Ok(cgroup)
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.procs()).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A PostgreSQL server on its own data directory, in its own memory cgroup.
pub struct Server {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    child: Option<Child>,
    /// The server's stderr.
    log: PathBuf,
    _cgroup: MemoryCgroup,
}

const PORT: &str = "5432";

impl Server {
    /// Creates a cluster in `dir` (which must not exist or be empty) and starts it.
    pub fn start(name: &str, dir: &Path, bin: &Path, plan: &Plan) -> Result<Self, PgbenchError> {
        let data = dir.join("pgdata");
        let socket_dir = dir.join("socket");
        for d in [&data, &socket_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| PgbenchError::Setup(format!("creating {}: {e}", d.display())))?;
        }
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or_else(|| PgbenchError::Setup("no postgres user (install postgresql)".into()))?;
        for d in [dir, &data, &socket_dir] {
            nix::unistd::chown(d, Some(user.uid), Some(user.gid))
                .map_err(|e| PgbenchError::Setup(format!("chown {}: {e}", d.display())))?;
        }
        run_command(
            "initdb",
            as_postgres(&bin.join("initdb")).arg("-D").arg(&data).args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-instructions",
            ]),
        )?;
        let cgroup = MemoryCgroup::create(
            &format!("fastvirt-pgbench-{name}-{}", std::process::id()),
            plan.memory_limit_mib << 20,
        )?;
        // The server's own log, for when a run fails (an OOM kill shows there).
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| PgbenchError::Setup(format!("creating {}: {e}", log_path.display())))?;
        // The shell moves itself into the cgroup, then becomes the server; the paths reach it as
        // arguments and environment, never as script text.
        let child = Command::new("sh")
            .arg("-c")
            .arg("echo $$ > \"$PROCS\" && exec \"$@\"")
            .arg("sh")
            .arg("setpriv")
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&socket_dir)
            .args(["-p", PORT, "-c", "listen_addresses="])
            .arg("-c")
            .arg(format!("shared_buffers={}MB", plan.shared_buffers_mib))
            .args([
                "-c",
                "max_connections=40",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
            ])
            // Index builds and sorts stay well inside the cgroup's limit (the default 64 MB of
            // maintenance_work_mem alone would fill it and get the server OOM-killed).
            .args(["-c", "maintenance_work_mem=8MB", "-c", "work_mem=1MB"])
            // WAL is bounded by checkpoints, so the data set and its WAL fit the volume.
            .args(["-c", "max_wal_size=192MB"])
            .env("PROCS", cgroup.procs())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| PgbenchError::Setup(format!("starting postgres: {e}")))?;
        let server = Self {
            bin: bin.to_owned(),
            data,
            socket_dir,
            child: Some(child),
            log: log_path,
            _cgroup: cgroup,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.ready() {
            if Instant::now() > deadline {
                return Err(PgbenchError::Setup(format!(
                    "postgres in {} did not accept connections within 60 s",
                    dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(server)
    }

    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", PORT, "-q"])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", PORT, "-U", "postgres"]);
        command
    }

    /// `pgbench -i` at the plan's scale; returns how long it took and the database's size.
    pub fn initialize(&self, scale: u32) -> Result<(f64, u64), PgbenchError> {
        let started = Instant::now();
        run_command(
            "pgbench -i",
            self.client("pgbench")
                .args(["-i", "-q", "-s", &scale.to_string(), "postgres"]),
        )?;
        let seconds = started.elapsed().as_secs_f64();
        let size = run_command(
            "psql",
            self.client("psql").args([
                "-Atc",
                "CHECKPOINT; SELECT pg_database_size('postgres')",
                "postgres",
            ]),
        )?;
        let bytes = size
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .next_back()
            .ok_or_else(|| PgbenchError::Output(format!("database size: {size:?}")))?;
        Ok((seconds, bytes))
    }

    /// One pgbench run of the TPC-B-like script.
    pub fn run(&self, clients: u32, runtime_s: u32) -> Result<Run, PgbenchError> {
        let threads = clients.min(
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
        );
        let output = run_command(
            &format!(
                "pgbench (server log: {}; a server killed in its memory cgroup needs a larger --memory-mib)",
                self.log.display()
            ),
            self.client("pgbench").args([
                "-n",
                "-c",
                &clients.to_string(),
                "-j",
                &threads.to_string(),
                "-T",
                &runtime_s.to_string(),
                "postgres",
            ]),
        )?;
        parse_output(&output).ok_or(PgbenchError::Output(output))
    }

    pub fn version(&self) -> String {
        Command::new(self.bin.join("postgres"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// A fast shutdown, waited for.
    pub fn stop(mut self) -> Result<(), PgbenchError> {
        let stopped = run_command(
            "pg_ctl stop",
            as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "stop"]),
        );
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        stopped.map(drop)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The cgroup's drop kills whatever is left; reap the shell's child first.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
