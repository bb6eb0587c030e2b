//! kubelet's plugin watcher finds sockets in its `plugins_registry` directory, calls GetInfo on
//! each, and then tells the plugin whether it registered it.

use crate::pluginregistration::registration_server::{Registration, RegistrationServer};
use crate::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use crate::server::{ServeError, bind_socket};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tonic::{Request, Response, Status};

/// The plugin type kubelet's CSI plugin handler accepts.
const CSI_PLUGIN_TYPE: &str = "CSIPlugin";
/// CSI versions this driver speaks, as kubelet expects them listed.
const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

/// Answers kubelet's registration calls.
#[derive(Debug, Clone)]
pub struct Registrar {
    /// The CSI socket as kubelet sees it: a host path, not the path inside the plugin's container.
    kubelet_endpoint: PathBuf,
    registered: Arc<AtomicBool>,
}

impl Registrar {
    pub fn new(kubelet_endpoint: PathBuf) -> Self {
        Self {
            kubelet_endpoint,
            registered: Arc::default(),
        }
    }

    /// Whether kubelet has confirmed the registration.
    pub fn registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: CSI_PLUGIN_TYPE.to_owned(),
            name: crate::DRIVER_NAME.to_owned(),
            endpoint: self.kubelet_endpoint.display().to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        self.registered
            .store(status.plugin_registered, Ordering::SeqCst);
        if status.plugin_registered {
            tracing::info!(endpoint = %self.kubelet_endpoint.display(), "kubelet registered the plugin");
        } else {
            // kubelet retries by calling GetInfo again; the reason is what an operator needs.
            tracing::error!(error = %status.error, "kubelet refused the plugin registration");
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// The socket kubelet's plugin watcher looks for: `<dir>/<driver name>-reg.sock`.
pub fn registration_socket(registration_dir: &Path) -> PathBuf {
    registration_dir.join(format!("{}-reg.sock", crate::DRIVER_NAME))
}

/// Serves the registration socket until `shutdown`, then removes it so kubelet deregisters.
pub async fn serve_registration(
    registrar: Registrar,
    registration_dir: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let socket = registration_socket(&registration_dir);
    let listener = bind_socket(&socket)?;
    tracing::info!(socket = %socket.display(), "serving kubelet plugin registration");
    let result = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(registrar))
        .serve_with_incoming_shutdown(crate::grpc_authority::incoming(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(&socket);
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn info_names_the_host_endpoint_and_status_is_remembered() {
        let registrar = Registrar::new(PathBuf::from(
            "/var/lib/kubelet/plugins/block.fastvirt.io/csi.sock",
        ));
        let info = registrar
            .get_info(Request::new(InfoRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, "block.fastvirt.io");
        assert_eq!(
            info.endpoint,
            "/var/lib/kubelet/plugins/block.fastvirt.io/csi.sock"
        );
        assert_eq!(info.supported_versions, ["1.0.0"]);
        assert!(!registrar.registered());
        registrar
            .notify_registration_status(Request::new(RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            }))
            .await
            .unwrap();
        assert!(registrar.registered());
        registrar
            .notify_registration_status(Request::new(RegistrationStatus {
                plugin_registered: false,
                error: "version".into(),
            }))
            .await
            .unwrap();
        assert!(!registrar.registered());
    }

    #[test]
    fn socket_name_is_what_kubelet_watches_for() {
        assert_eq!(
            registration_socket(Path::new("/registration")),
            Path::new("/registration/block.fastvirt.io-reg.sock")
        );
    }
}
