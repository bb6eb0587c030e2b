//! The cluster's network: a network namespace of its own, joined to the host by a veth pair with
//! addresses the cluster picks. Every component runs inside it, so no cluster traffic uses the
//! machine's own interfaces. The Service range is local to the namespace, and the one Service the
//! cluster needs without kube-proxy, `kubernetes` (the first Service IP), is translated to the API
//! server by two NAT rules that live and die with the namespace.

use super::process::run;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The Service CIDR given to the API server.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
/// The `kubernetes` Service's ClusterIP: the first address of [`SERVICE_CIDR`].
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The pod network of the CNI bridge.
pub const POD_CIDR: &str = "10.88.0.0/16";
/// The API server's port.
pub const API_PORT: u16 = 6443;

/// Names and addresses of one cluster's network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    /// Under /run/netns.
    pub netns: String,
    /// The veth end on the host.
    pub host_link: String,
    /// The veth end in the namespace.
    pub node_link: String,
    pub host_ip: Ipv4Addr,
    /// The node's (and API server's) address, inside the namespace.
    pub node_ip: Ipv4Addr,
}

impl Network {
    /// The network of the cluster with this id: `slot` picks a /30 of 10.250.0.0/16.
    pub fn for_id(id: &str, slot: u8) -> Self {
        let short = &id[..id.len().min(8)];
        Self {
            netns: format!("fastvirt-{short}"),
            host_link: format!("fvh{}", &short[..short.len().min(8)]),
            node_link: format!("fvn{}", &short[..short.len().min(8)]),
            host_ip: Ipv4Addr::new(10, 250, slot, 1),
            node_ip: Ipv4Addr::new(10, 250, slot, 2),
        }
    }

    pub fn exists(&self) -> bool {
        std::path::Path::new(&format!("/run/netns/{}", self.netns)).exists()
    }

    pub fn create(&self) -> Result<()> {
        let ns = self.netns.as_str();
        run("ip", &["netns", "add", ns]).context("creating the network namespace")?;
        run(
            "ip",
            &[
                "link",
                "add",
                &self.host_link,
                "type",
                "veth",
                "peer",
                "name",
                &self.node_link,
            ],
        )?;
        run("ip", &["link", "set", &self.node_link, "netns", ns])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", self.host_ip),
                "dev",
                &self.host_link,
            ],
        )?;
        run("ip", &["link", "set", &self.host_link, "up"])?;
        let node_addr = format!("{}/30", self.node_ip);
        for args in [
            vec!["addr", "add", node_addr.as_str(), "dev", &self.node_link],
            vec!["link", "set", &self.node_link, "up"],
            vec!["link", "set", "lo", "up"],
            // The Service range answers inside the namespace and never leaves it.
            vec![
                "route",
                "add",
                "local",
                SERVICE_CIDR,
                "dev",
                "lo",
                "table",
                "local",
            ],
        ] {
            let mut full = vec!["-n", ns];
            full.extend(args);
            run("ip", &full)?;
        }
        let destination = format!("{}:{API_PORT}", self.node_ip);
        let service = format!("{KUBERNETES_SERVICE_IP}/32");
        for chain in ["PREROUTING", "OUTPUT"] {
            run(
                "nsenter",
                &[
                    &format!("--net=/run/netns/{ns}"),
                    "--",
                    "iptables",
                    "-w",
                    "-t",
                    "nat",
                    "-A",
                    chain,
                    "-d",
                    &service,
                    "-p",
                    "tcp",
                    "--dport",
                    "443",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &destination,
                ],
            )
            .context("adding the kubernetes Service NAT rule")?;
        }
        Ok(())
    }

    /// Removes the namespace (its veth end, routes and NAT rules go with it) and the host end.
    pub fn delete(&self) -> Result<()> {
        if self.exists() {
            run("ip", &["netns", "delete", &self.netns])?;
        }
        // Deleting the namespace destroys its veth end, and the host end goes with it, but not
        // always before this line: only a link that is still there after a failed delete is one.
        let host_end = format!("/sys/class/net/{}", self.host_link);
        if std::path::Path::new(&host_end).exists()
            && let Err(error) = run("ip", &["link", "delete", &self.host_link])
            && std::path::Path::new(&host_end).exists()
        {
            return Err(error);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_limits() {
        let net = Network::for_id("0123456789abcdef", 7);
        assert!(net.host_link.len() <= 15 && net.node_link.len() <= 15);
        assert_eq!(net.netns, "fastvirt-01234567");
        assert_eq!(net.node_ip, Ipv4Addr::new(10, 250, 7, 2));
    }
}
