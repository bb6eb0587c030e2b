//! The kubelet's configuration file, read to tell whether its CPU manager matches the profile.
//! The agent never edits it and never restarts the kubelet; it reports what differs.

use crate::hostfs::HostFs;

/// Where kubeadm and most distributions put the KubeletConfiguration.
pub const CONFIG_PATHS: &[&str] = &[
    "var/lib/kubelet/config.yaml",
    "etc/kubernetes/kubelet-config.yaml",
    "etc/kubernetes/kubelet/config.yaml",
];

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubeletConfig {
    pub path: String,
    pub cpu_manager_policy: Option<String>,
    pub reserved_system_cpus: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletConfigError {
    #[error("{path}: not a KubeletConfiguration: {source}")]
    Yaml {
        path: String,
        source: serde_yaml::Error,
    },
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration {
    cpu_manager_policy: Option<String>,
    #[serde(rename = "reservedSystemCPUs")]
    reserved_system_cpus: Option<String>,
}

/// The first configuration file found, or `None` when the host has no kubelet configuration.
pub fn read(fs: &dyn HostFs) -> Option<Result<KubeletConfig, KubeletConfigError>> {
    let (path, text) = CONFIG_PATHS
        .iter()
        .find_map(|p| fs.read(p).ok().map(|text| (*p, text)))?;
    Some(
        serde_yaml::from_str::<KubeletConfiguration>(&text)
            .map(|config| KubeletConfig {
                path: format!("/{path}"),
                cpu_manager_policy: config.cpu_manager_policy,
                reserved_system_cpus: config.reserved_system_cpus,
            })
            .map_err(|source| KubeletConfigError::Yaml {
                path: format!("/{path}"),
                source,
            }),
    )
}
