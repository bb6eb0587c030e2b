//! kubectl and helm, as built by `scripts/install-kube.sh`, bound to one kubeconfig.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Kubectl {
    pub bin_dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(bin_dir: &Path, kubeconfig: &Path) -> Self {
        Self {
            bin_dir: bin_dir.to_owned(),
            kubeconfig: kubeconfig.to_owned(),
        }
    }

    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(tool));
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .stdin(Stdio::null());
        command
    }

    /// Runs kubectl; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        output(self.command("kubectl").args(args), "kubectl", args)
    }

    /// Runs kubectl with `input` on stdin (`apply -f -`, `create -f -`).
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        let mut command = self.command("kubectl");
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("starting kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn apply(&self, manifest: &str) -> Result<String> {
        self.run_with_input(&["apply", "--server-side", "-f", "-"], manifest)
    }

    /// `kubectl get … -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut full = vec!["get"];
        full.extend(args);
        full.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.run(&full)?)?)
    }

    pub fn helm(&self, args: &[&str]) -> Result<String> {
        output(self.command("helm").args(args), "helm", args)
    }

    /// Polls `check` every half second until it answers `Some`, or fails with what it saw last.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match check() {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => "not yet".to_owned(),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                bail!("{what}: not reached within {timeout:?} (last: {last})");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn output(command: &mut Command, tool: &str, args: &[&str]) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
