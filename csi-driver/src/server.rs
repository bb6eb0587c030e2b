//! Serving the CSI services on a unix socket.

use crate::config::Config;
use crate::pool_follower;
use crate::pool_set::PoolSet;
use crate::proto::controller_server::ControllerServer;
use crate::proto::identity_server::IdentityServer;
use crate::proto::node_server::NodeServer;
use crate::registration::{Registrar, serve_health, serve_registration};
use crate::service::node::advertised::NodeCapabilitiesOnly;
use crate::service::{ControllerService, Driver, IdentityService, NodeService};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use tokio::net::UnixListener;

/// How long shutdown waits for running operations.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let context = context.into();
    move |source| ServeError::Io { context, source }
}

/// Holds the state directory's lock: two node plugins on one node would fight over loop devices.
fn lock_state_dir(config: &Config) -> Result<Flock<File>, ServeError> {
    std::fs::create_dir_all(&config.state_dir)
        .map_err(io(format!("creating {}", config.state_dir.display())))?;
    let path = config
        .state_dir
        .join(format!("{:?}.lock", config.mode).to_lowercase());
    let file = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        ServeError::Setup(format!("{} is locked ({errno}): another fastvirt-csi in this mode runs with the same state directory", path.display()))
    })
}

/// Binds the socket: a stale socket from a dead process is replaced, a live one is left alone, and
/// the new socket is accessible to root only.
pub fn bind_socket(path: &Path) -> Result<UnixListener, ServeError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::Setup(format!(
                    "{} is served by another running process",
                    path.display()
                )));
            }
            std::fs::remove_file(path)
                .map_err(io(format!("removing stale socket {}", path.display())))?;
        }
        Ok(_) => {
            return Err(ServeError::Setup(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("inspecting {}", path.display()))(e)),
    }
    // Nothing else runs yet, so narrowing the process umask for the bind cannot affect other files.
    let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(previous);
    let listener = listener.map_err(io(format!("binding {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod {}", path.display())))?;
    Ok(listener)
}

/// Serves until `shutdown` resolves, then removes the socket.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let _lock = lock_state_dir(&config)?;
    let pools = PoolSet::files(config.capacity_reserve_percent, config.overcommit_percent);
    pool_follower::open_initial(&config, &pools);
    let mut driver = Driver::new(&config, pools);
    if config.kube_api {
        // One crypto provider for the API client's TLS, chosen here: the dependency tree enables
        // more than one, and rustls would panic on the first connection instead of choosing.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = kube::Client::try_default().await.map_err(|e| {
            ServeError::Setup(format!(
                "--kube-api: no Kubernetes client configuration: {e}"
            ))
        })?;
        driver.kube = Some(crate::service::KubeApi(client));
    }
    let listener = bind_socket(&config.socket_path)?;
    tracing::info!(
        endpoint = %config.socket_path.display(),
        node = %config.node_id,
        mode = ?config.mode,
        version = crate::VERSION,
        "serving {}",
        crate::DRIVER_NAME
    );
    let controller = config
        .mode
        .serves_controller()
        .then(|| ControllerServer::new(ControllerService::new(driver.clone())));
    let node = config
        .mode
        .serves_node()
        .then(|| NodeServer::new(NodeService::new(driver.clone())));
    // external-resizer learns from NodeGetCapabilities that nodes grow volumes.
    let node_capabilities = (config.mode == crate::config::Mode::Controller
        && config.expansion == crate::config::Expansion::Node)
        .then(|| NodeServer::new(NodeCapabilitiesOnly));
    let health_driver = driver.clone();
    let watch_driver = driver.clone();
    let driver_kube = driver.kube.clone();
    let driver_pools = Arc::clone(&driver.pools);
    let qos = config.mode.serves_node().then(|| Arc::clone(&driver.qos));
    let metrics =
        crate::metrics::Metrics::new(Arc::clone(&driver.pools), "/sys/block".into(), qos.clone());
    let server = tonic::transport::Server::builder()
        .layer(metrics.layer())
        .add_service(IdentityServer::new(IdentityService::new(driver)))
        .add_optional_service(controller)
        .add_optional_service(node)
        .add_optional_service(node_capabilities)
        .serve_with_incoming(crate::grpc_authority::incoming(listener));
    // The built-in registrar and health endpoint live exactly as long as the CSI server.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let mut helpers = tokio::task::JoinSet::new();
    if let Some(registration) = &config.registration {
        helpers.spawn(serve_registration(
            Registrar::new(registration.kubelet_endpoint.clone()),
            registration.registration_dir.clone(),
            until_stopped(),
        ));
    }
    if config.pool_file.is_some() {
        let follower = pool_follower::follow(
            config.clone(),
            Arc::clone(&driver_pools),
            pool_follower::POLL_INTERVAL,
            until_stopped(),
        );
        helpers.spawn(async move {
            follower.await;
            Ok(())
        });
    }
    if let (Some(client), true) = (driver_kube, config.mode.serves_node()) {
        let watch = crate::qos::pv_watch::follow(client.0, watch_driver, until_stopped());
        helpers.spawn(async move {
            watch.await;
            Ok(())
        });
    }
    if let Some(qos) = qos {
        let enforcer = qos.run(until_stopped());
        helpers.spawn(async move {
            enforcer.await;
            Ok(())
        });
    }
    if let Some(port) = config.health_port {
        helpers.spawn(serve_health(health_driver, port, until_stopped()));
    }
    if let Some(port) = config.metrics_port {
        helpers.spawn(crate::metrics::serve_metrics(
            metrics,
            port,
            until_stopped(),
        ));
    }
    // Stop accepting at once on shutdown, but let running operations finish: a mkfs or mount cut
    // short leaves work for the next start. Idle client connections are not waited for.
    let result = tokio::select! {
        result = server => result.map_err(ServeError::from),
        () = shutdown => Ok(()),
        Some(helper) = helpers.join_next() => Err(match helper {
            Ok(Err(error)) => error,
            Ok(Ok(())) => ServeError::Setup("the registrar, health or metrics endpoint stopped".into()),
            Err(join) => ServeError::Setup(format!("the registrar, health or metrics endpoint failed: {join}")),
        }),
    };
    let _ = stop.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), helpers.join_all()).await;
    let _ = std::fs::remove_file(&config.socket_path);
    let unfinished = crate::service::drain_in_flight(SHUTDOWN_GRACE).await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "stopping with operations still running after {SHUTDOWN_GRACE:?}"
        );
    }
    tracing::info!("stopped");
    result
}
