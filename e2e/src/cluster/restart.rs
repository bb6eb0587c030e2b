//! Restarting the API server of a running cluster in place, as a platform team restarting a
//! control-plane process would (an upgrade, a certificate rotation): the chaos test does it while
//! volumes come and go, and everything must carry on once it is back.

use super::State;
use super::components;
use super::process;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

const APISERVER: &str = "kube-apiserver";

/// Stops the API server of the cluster in `workdir` (SIGTERM, as kubelet would stop a static pod),
/// starts it again with the same flags and waits until it is ready. Returns how long it was away.
pub fn restart_apiserver(workdir: &Path) -> Result<Duration> {
    let mut state =
        State::load(workdir)?.with_context(|| format!("no cluster in {}", workdir.display()))?;
    let index = state
        .components
        .iter()
        .position(|c| c.name == APISERVER)
        .context("the cluster has no kube-apiserver")?;
    let old = state.components.remove(index);
    let stopped = Instant::now();
    process::stop(old.pid, Duration::from_secs(30));
    let program = state.kube_bin.join(APISERVER);
    let args = components::apiserver_args(&state.layout());
    let apiserver = super::start::start_program(&mut state, APISERVER, &program, args)?;
    // Back in its place, so `down` stops the components in the order `up` started them.
    let restarted = state.components.pop().context("the restarted component")?;
    state.components.insert(index, restarted);
    state.save()?;
    let kubectl = state.kubectl();
    process::wait_ready(
        &apiserver,
        "ready again",
        super::start::START_TIMEOUT,
        || kubectl.run(&["get", "--raw", "/readyz"]).is_ok(),
    )?;
    Ok(stopped.elapsed())
}
