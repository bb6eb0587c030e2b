//! Follows the operator's pool file while the plugin runs, so a new, changed or removed BlockPool
//! reaches the node without restarting the plugin (and without a rolling restart of every node
//! plugin whenever a node joins or a label changes).
//!
//! kubelet updates a mounted ConfigMap by swapping a symlink, so the file is simply read again on
//! a short interval and acted on when the pools it names for this node differ. Unavailable pools
//! are retried on the same interval (a directory that appears later comes into service by
//! itself), and a pool that left is closed once its last volume and snapshot are deleted.

use crate::config::{Config, PoolConfig};
use crate::pool_set::PoolSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often the pool file is read again.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Opens the pools of `config` now; a pool that cannot open is reported, not fatal.
pub fn open_initial(config: &Config, pools: &PoolSet) {
    pools.sync(&config.pools);
}

/// Runs until `stop` resolves.
pub async fn follow(
    config: Config,
    pools: Arc<PoolSet>,
    interval: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut applied: Vec<PoolConfig> = config.pools.clone();
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(interval) => {}
        }
        let wanted = match config.current_pools() {
            Ok(wanted) => {
                last_error = None;
                wanted
            }
            Err(error) => {
                // A broken file keeps the pools as they are: dropping them would strand volumes.
                let message = error.to_string();
                if last_error.as_deref() != Some(message.as_str()) {
                    tracing::error!(%message, "the pool file cannot be used; keeping the current pools");
                    last_error = Some(message);
                }
                continue;
            }
        };
        if wanted == applied && !pools.has_pending() {
            continue;
        }
        let set = Arc::clone(&pools);
        let target = wanted.clone();
        match tokio::task::spawn_blocking(move || set.sync(&target)).await {
            Ok(report) if !report.is_empty() => {
                tracing::info!(opened = ?report.opened, closed = ?report.closed, unavailable = ?report.unavailable, "pools follow the pool file")
            }
            Ok(_) => {}
            Err(join) => tracing::error!(%join, "updating the pools failed"),
        }
        applied = wanted;
    }
}
