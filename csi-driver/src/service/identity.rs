//! The Identity service: who the plugin is, what it offers, and whether its pools are usable.

use super::{Driver, blocking};
use crate::proto::identity_server::Identity;
use crate::proto::plugin_capability::{self, service};
use crate::proto::*;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct IdentityService {
    driver: Driver,
}

impl IdentityService {
    pub fn new(driver: Driver) -> Self {
        Self { driver }
    }
}

fn service_capability(kind: service::Type) -> PluginCapability {
    PluginCapability {
        r#type: Some(plugin_capability::Type::Service(
            plugin_capability::Service {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: crate::DRIVER_NAME.to_owned(),
            vendor_version: crate::VERSION.to_owned(),
            manifest: [(
                "url".to_owned(),
                "https://github.com/fastvirt/fastvirt".to_owned(),
            )]
            .into(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let mut capabilities = vec![service_capability(
            service::Type::VolumeAccessibilityConstraints,
        )];
        if self.driver.serves_controller {
            capabilities.push(service_capability(service::Type::ControllerService));
        }
        capabilities.push(PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(
                plugin_capability::VolumeExpansion {
                    r#type: plugin_capability::volume_expansion::Type::Online as i32,
                },
            )),
        });
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        let driver = self.driver.clone();
        blocking("Probe", move || {
            driver.check_ready().map_err(Status::failed_precondition)?;
            Ok(ProbeResponse { ready: Some(true) })
        })
        .await
    }
}
