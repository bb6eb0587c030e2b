//! The throwaway cluster's certificates: one CA for serving and client certificates, the
//! ServiceAccount token signing key, and kubeconfigs that authenticate with client certificates.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where the files of the cluster's PKI are.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

/// A certificate and key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }

    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    pub fn files(&self, name: &str) -> CertFiles {
        CertFiles {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        }
    }
}

/// A client identity: the CN is the user name, each O a group.
#[derive(Debug, Clone)]
pub struct Client<'a> {
    pub file: &'a str,
    pub user: &'a str,
    pub groups: &'a [&'a str],
}

/// Writes a fresh CA, the API server's serving certificate (for `server_names`), the kubelet's
/// serving certificate, every client in `clients`, and the ServiceAccount signing key.
pub fn create(
    dir: &Path,
    server_names: &[String],
    kubelet_names: &[String],
    clients: &[Client<'_>],
) -> Result<Pki> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fastvirt-cluster-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let pki = Pki {
        dir: dir.to_owned(),
    };
    write(&pki.ca_cert(), &ca.pem())?;

    let serving = |name: &str, cn: &str, sans: &[String]| -> Result<()> {
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        issue(&pki, name, params, &ca)
    };
    serving("apiserver", "kube-apiserver", server_names)?;
    serving("kubelet-serving", "kubelet", kubelet_names)?;
    for client in clients {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, client.user);
        for group in client.groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        issue(&pki, client.file, params, &ca)?;
    }
    let sa = KeyPair::generate()?;
    write(&pki.sa_key(), &sa.serialize_pem())?;
    write(&pki.sa_pub(), &sa.public_key_pem())?;
    Ok(pki)
}

fn issue(
    pki: &Pki,
    name: &str,
    mut params: CertificateParams,
    ca: &CertifiedIssuer<'_, KeyPair>,
) -> Result<()> {
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    let files = pki.files(name);
    write(&files.cert, &cert.pem())?;
    write(&files.key, &key.serialize_pem())
}

fn write(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A kubeconfig for `server` that authenticates with the client certificate `files`.
pub fn kubeconfig(path: &Path, server: &str, ca: &Path, files: &CertFiles) -> Result<()> {
    let user = serde_json::json!({
        "client-certificate": files.cert,
        "client-key": files.key,
    });
    write_kubeconfig(path, server, ca, user)
}

/// A kubeconfig that authenticates with a bearer token (a ServiceAccount's).
pub fn token_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) -> Result<()> {
    write_kubeconfig(path, server, ca, serde_json::json!({"token": token}))
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, user: serde_json::Value) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fastvirt", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "fastvirt", "context": {"cluster": "fastvirt", "user": "user"}}],
        "current-context": "fastvirt",
    });
    write(path, &serde_yaml::to_string(&config)?)
}

/// Subject alternative names as strings, IPs first.
pub fn names(ips: &[IpAddr], dns: &[&str]) -> Vec<String> {
    ips.iter()
        .map(ToString::to_string)
        .chain(dns.iter().map(|d| (*d).to_owned()))
        .collect()
}
