//! An in-memory Kubernetes API for tests, on kube-fake-client, that also serves cluster-scoped
//! custom resources.
//!
//! kube-fake-client 0.3 registers every custom resource as namespaced (it cannot read the scope
//! from the type), so the cluster-wide URLs that `Api::all` uses for fastvirt's cluster-scoped
//! resources are refused there. This layer keeps those objects in the `default` namespace of
//! the fake server: it rewrites their URLs on the way in and drops the namespace from their
//! metadata on the way out, so code under test sees exactly what a real API server would show.

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use kube::client::Body;
use serde_json::Value;
use std::collections::BTreeSet;

/// Where the fake server keeps cluster-scoped custom resources.
const STORAGE_NAMESPACE: &str = "default";

/// A client on `builder`'s fake server in which the custom resources with the given plural names
/// are cluster-scoped. Seed such objects without a namespace.
pub async fn client(
    builder: kube_fake_client::ClientBuilder,
    cluster_scoped_plurals: &[&str],
) -> kube::Client {
    let inner = builder.build().await.expect("the fake API server starts");
    let plurals: BTreeSet<String> = cluster_scoped_plurals
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    let service = tower::service_fn(move |request: Request<Body>| {
        let inner = inner.clone();
        let plurals = plurals.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            let rewritten = rewrite_path(parts.uri.path(), &plurals);
            let scoped = rewritten.is_some();
            if let Some(path) = rewritten {
                let path_and_query = match parts.uri.query() {
                    Some(query) => format!("{path}?{query}"),
                    None => path,
                };
                parts.uri = Uri::builder()
                    .path_and_query(path_and_query)
                    .build()
                    .expect("a rewritten URI is valid");
            }
            let response = inner.send(Request::from_parts(parts, body)).await?;
            let (parts, body) = response.into_parts();
            let mut bytes = body
                .collect()
                .await
                .map_err(|e| kube::Error::Service(e.into()))?
                .to_bytes();
            if scoped && let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) {
                drop_namespaces(&mut value);
                bytes = Bytes::from(serde_json::to_vec(&value).expect("JSON serializes"));
            }
            Ok::<_, kube::Error>(Response::from_parts(parts, Full::new(bytes)))
        }
    });
    kube::Client::new(service, STORAGE_NAMESPACE)
}

/// `/apis/<group>/<version>/<plural>[/...]` → `/apis/<group>/<version>/namespaces/default/<plural>[/...]`
/// for the listed plurals; `None` for every other path.
fn rewrite_path(path: &str, plurals: &BTreeSet<String>) -> Option<String> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["apis", group, version, plural, rest @ ..] if plurals.contains(*plural) => {
            let mut rewritten =
                format!("/apis/{group}/{version}/namespaces/{STORAGE_NAMESPACE}/{plural}");
            for segment in rest {
                rewritten.push('/');
                rewritten.push_str(segment);
            }
            Some(rewritten)
        }
        _ => None,
    }
}

fn drop_namespaces(value: &mut Value) {
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut)
        && is_storage_namespace(metadata.get("namespace"))
    {
        metadata.remove("namespace");
    }
    if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            drop_namespaces(item);
        }
    }
}

fn is_storage_namespace(namespace: Option<&Value>) -> bool {
    namespace.and_then(Value::as_str) == Some(STORAGE_NAMESPACE)
}

/// A kubeconfig for an API server that refuses connections (a closed loopback port), for
/// starting the binaries without a cluster.
pub fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address").port()
    };
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: none\n  cluster: {{server: \"https://127.0.0.1:{closed_port}\"}}\n\
contexts:\n- name: none\n  context: {{cluster: none, user: none}}\ncurrent-context: none\n\
users:\n- name: none\n  user: {{token: test}}\n"
    );
    std::fs::write(&path, text).expect("writing the kubeconfig");
    path
}

/// A free loopback port for a server under test.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` on a loopback port: the status code and body, or `None` while nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

/// Polls `check` every 100 ms for up to `seconds`.
pub fn wait_for(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_cluster_paths_are_rewritten() {
        let plurals = BTreeSet::from(["blockpools".to_owned()]);
        assert_eq!(
            rewrite_path("/apis/fastvirt.io/v1alpha1/blockpools", &plurals).as_deref(),
            Some("/apis/fastvirt.io/v1alpha1/namespaces/default/blockpools")
        );
        assert_eq!(
            rewrite_path(
                "/apis/fastvirt.io/v1alpha1/blockpools/fast/status",
                &plurals
            )
            .as_deref(),
            Some("/apis/fastvirt.io/v1alpha1/namespaces/default/blockpools/fast/status")
        );
        assert_eq!(
            rewrite_path("/apis/fastvirt.io/v1alpha1/tunednodes/a", &plurals),
            None
        );
        assert_eq!(rewrite_path("/api/v1/nodes", &plurals), None);
    }
}
