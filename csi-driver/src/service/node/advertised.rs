//! The Node service of a controller without pools (`--mode controller --expansion node`): only
//! NodeGetCapabilities, which external-resizer asks at start to learn that the nodes grow volumes
//! (without it the resizer has no way to expand and exits). Every other Node call is UNIMPLEMENTED:
//! there are no volumes here to stage or publish.

use crate::proto::node_server::Node;
use crate::proto::{NodeGetCapabilitiesRequest, NodeGetCapabilitiesResponse};
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Copy, Default)]
pub struct NodeCapabilitiesOnly;

#[tonic::async_trait]
impl Node for NodeCapabilitiesOnly {
    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(super::capabilities()))
    }
}
