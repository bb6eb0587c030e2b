//! Restarting a component of a running cluster in place, as a platform team would: the API server
//! (an upgrade, a certificate rotation; the chaos test does it while volumes come and go), and the
//! kubelet (to read a changed configuration, as the agent's kubelet drop-in asks for).

use super::State;
use super::components;
use super::process;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

const APISERVER: &str = "kube-apiserver";
const KUBELET: &str = "kubelet";

/// Stops the API server of the cluster in `workdir` (SIGTERM, as kubelet would stop a static pod),
/// starts it again with the same flags and waits until it is ready. Returns how long it was away.
pub fn restart_apiserver(workdir: &Path) -> Result<Duration> {
    restart(workdir, APISERVER, components::apiserver_args, |state| {
        state.kubectl().run(&["get", "--raw", "/readyz"]).is_ok()
    })
}

/// Stops the cluster's kubelet (SIGTERM) and starts it again with the same flags, so that it reads
/// its configuration and drop-ins anew; waits until the new kubelet answers `/configz`. Its pods
/// keep running meanwhile (containerd holds them).
pub fn restart_kubelet(workdir: &Path) -> Result<Duration> {
    restart(workdir, KUBELET, components::kubelet_args, |state| {
        let path = format!("/api/v1/nodes/{}/proxy/configz", state.node_name);
        state.kubectl().run(&["get", "--raw", &path]).is_ok()
    })
}

fn restart(
    workdir: &Path,
    name: &str,
    args: fn(&components::Layout) -> Vec<std::ffi::OsString>,
    ready: impl Fn(&State) -> bool,
) -> Result<Duration> {
    let mut state =
        State::load(workdir)?.with_context(|| format!("no cluster in {}", workdir.display()))?;
    let index = state
        .components
        .iter()
        .position(|c| c.name == name)
        .with_context(|| format!("the cluster has no {name}"))?;
    let old = state.components.remove(index);
    let stopped = Instant::now();
    process::stop(old.pid, Duration::from_secs(30));
    let program = state.kube_bin.join(name);
    let args = args(&state.layout());
    let component = super::start::start_program(&mut state, name, &program, args)?;
    // Back in its place, so `down` stops the components in the order `up` started them.
    let restarted = state.components.pop().context("the restarted component")?;
    state.components.insert(index, restarted);
    state.save()?;
    process::wait_ready(
        &component,
        "ready again",
        super::start::START_TIMEOUT,
        || ready(&state),
    )?;
    Ok(stopped.elapsed())
}
