//! Every CSI call counted by method and gRPC code, with its latency: a tower layer around the
//! tonic server, so the trivial RPCs count as the heavy ones do. A handler's error leaves tonic as
//! a trailers-only response whose headers carry `grpc-status`; a unary answer without it is OK.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The CSI methods the driver serves; any other path counts as `unknown`, so a client cannot
/// grow the label set.
const METHODS: &[&str] = &[
    "GetPluginInfo",
    "GetPluginCapabilities",
    "Probe",
    "CreateVolume",
    "DeleteVolume",
    "ValidateVolumeCapabilities",
    "ListVolumes",
    "GetCapacity",
    "ControllerGetCapabilities",
    "CreateSnapshot",
    "DeleteSnapshot",
    "ListSnapshots",
    "ControllerExpandVolume",
    "NodeStageVolume",
    "NodeUnstageVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "NodeGetVolumeStats",
    "NodeExpandVolume",
    "NodeGetCapabilities",
    "NodeGetInfo",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

/// The counters and histograms of the calls.
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    calls: Family<CallLabels, Counter>,
    durations: Family<MethodLabels, Histogram>,
}

impl RpcMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        let durations = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to ~65 s: a mkfs of a large volume takes seconds.
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        registry.register(
            "rpc_requests",
            "CSI calls answered, by method and gRPC code",
            calls.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "How long CSI calls took, by method",
            durations.clone(),
        );
        Self { calls, durations }
    }

    fn record(&self, method: &'static str, code: &'static str, seconds: f64) {
        self.calls.get_or_create(&CallLabels { method, code }).inc();
        self.durations
            .get_or_create(&MethodLabels { method })
            .observe(seconds);
    }
}

/// The method a request path names (`/csi.v1.Node/NodeStageVolume` → `NodeStageVolume`).
pub fn method(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("unknown")
}

/// The gRPC code a response's headers carry, `OK` when they carry none.
pub fn code(headers: &http::HeaderMap) -> &'static str {
    let number = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    code_name(tonic::Code::from_i32(number))
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// The layer for `tonic::transport::Server::builder().layer(…)`.
#[derive(Clone, Debug)]
pub struct RpcMetricsLayer {
    metrics: RpcMetrics,
}

impl RpcMetricsLayer {
    pub fn new(metrics: RpcMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method(request.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => code(response.headers()),
                Err(_) => "Unavailable",
            };
            metrics.record(method, code, started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_codes_are_bounded_names() {
        assert_eq!(method("/csi.v1.Node/NodeStageVolume"), "NodeStageVolume");
        assert_eq!(method("/csi.v1.Identity/Probe"), "Probe");
        assert_eq!(method("/x.y/Anything"), "unknown");
        let mut headers = http::HeaderMap::new();
        assert_eq!(code(&headers), "OK");
        headers.insert("grpc-status", "3".parse().unwrap());
        assert_eq!(code(&headers), "InvalidArgument");
        headers.insert("grpc-status", "10".parse().unwrap());
        assert_eq!(code(&headers), "Aborted");
    }
}
