//! The images the cluster's node runs, built from this host's files and imported into containerd:
//! the sandbox, the toolbox, fastvirt's three (from the working tree's binaries), and the CSI
//! sidecars under exactly the references the chart renders.

use super::components::Layout;
use super::images::{self, ImageSpec};
use super::start::{UpOptions, ctr, which};
use super::{PAUSE_IMAGE, State, TOOLBOX_IMAGE};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};

/// The images the node runs: the sandbox, the toolbox, fastvirt's three, and the sidecars at
/// exactly the references the chart renders.
/// `chart_repo`: the checkout whose chart names the sidecars, `None` for a bare cluster; fastvirt's
/// images get the state's tag.
fn image_specs(
    state: &State,
    chart_repo: Option<&Path>,
    binaries: &Path,
) -> Result<Vec<ImageSpec>> {
    let kube_bin = &state.kube_bin;
    let tag = &state.image_tag;
    let mut specs = vec![
        ImageSpec {
            user: "65535:65535".into(),
            ..ImageSpec::new(PAUSE_IMAGE).program(&kube_bin.join("pause"), "/pause")?
        }
        .entrypoint(&["/pause"]),
    ];
    let busybox = which("busybox")?;
    let mut toolbox = ImageSpec::new(TOOLBOX_IMAGE).program(&busybox, "/bin/busybox")?;
    for applet in images::busybox_applets(&busybox)? {
        if applet != "busybox" {
            toolbox.symlinks.push((
                PathBuf::from("/bin").join(&applet),
                PathBuf::from("busybox"),
            ));
        }
    }
    toolbox.cmd = vec!["sh".into()];
    specs.push(toolbox);

    let mut csi = ImageSpec::new(format!("localhost/fastvirt/fastvirt-csi:{tag}")).program(
        &binaries.join("fastvirt-csi"),
        "/usr/local/bin/fastvirt-csi",
    )?;
    // The tools the driver runs (see images/csi.Dockerfile).
    for tool in [
        "mkfs.ext4",
        "mkfs.xfs",
        "blkid",
        "resize2fs",
        "xfs_growfs",
        "fsfreeze",
        "btrfs",
    ] {
        let host = which(tool)?;
        csi = csi.program(&host, Path::new("/usr/sbin").join(tool))?;
    }
    specs.push(
        csi.optional_file(Path::new("/etc/mke2fs.conf"))
            .entrypoint(&["/usr/local/bin/fastvirt-csi"]),
    );
    specs.push(
        ImageSpec {
            user: "65532:65532".into(),
            ..ImageSpec::new(format!("localhost/fastvirt/fastvirt-operator:{tag}")).program(
                &binaries.join("fastvirt-operator"),
                "/usr/local/bin/fastvirt-operator",
            )?
        }
        .entrypoint(&["/usr/local/bin/fastvirt-operator"]),
    );
    specs.push(
        ImageSpec::new(format!("localhost/fastvirt/fastvirt-agent:{tag}"))
            .program(
                &binaries.join("fastvirt-agent"),
                "/usr/local/bin/fastvirt-agent",
            )?
            .entrypoint(&["/usr/local/bin/fastvirt-agent"]),
    );
    let Some(repo) = chart_repo else {
        return Ok(specs);
    };
    for (key, binary) in [
        ("provisioner", "csi-provisioner"),
        ("resizer", "csi-resizer"),
        ("snapshotter", "csi-snapshotter"),
    ] {
        let reference = chart_sidecar_image(repo, key)?;
        let entry = format!("/{binary}");
        specs.push(
            ImageSpec::new(reference)
                .program(&kube_bin.join(binary), &entry)?
                .entrypoint(&[&entry]),
        );
    }
    Ok(specs)
}

/// `repository:tag` of a sidecar in the chart's values.yaml: `node.sidecars.<key>`, or
/// `controller.<key>` (the resizer, which older charts ran on every node).
pub fn chart_sidecar_image(repo: &Path, key: &str) -> Result<String> {
    let path = repo.join("charts/fastvirt/values.yaml");
    let values: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("reading {}", path.display()))?;
    for image in [
        &values["node"]["sidecars"][key]["image"],
        &values["controller"][key]["image"],
    ] {
        if let (Some(repository), Some(tag)) = (image["repository"].as_str(), image["tag"].as_str())
        {
            return Ok(format!("{repository}:{tag}"));
        }
    }
    bail!(
        "{} has no node.sidecars.{key}.image nor controller.{key}.image",
        path.display()
    )
}

pub(super) fn fastvirt_binaries(options: &UpOptions) -> Result<PathBuf> {
    if let Some(dir) = &options.binaries {
        return Ok(dir.clone());
    }
    eprintln!(
        "fastvirt-cluster: building fastvirt-csi, fastvirt-operator and fastvirt-agent (release)"
    );
    build_fastvirt_binaries(&options.repo, true)
}

/// Builds the three binaries the images carry, in `repo`, and returns their directory. Under
/// `cargo test` the cargo that runs the test builds them (`CARGO`), so the profile's artifacts are
/// shared.
pub fn build_fastvirt_binaries(repo: &Path, release: bool) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--quiet", "--locked"]);
    if release {
        command.arg("--release");
    }
    let status = command
        .args([
            "-p",
            "fastvirt-csi",
            "-p",
            "fastvirt-operator",
            "-p",
            "fastvirt-agent",
            "--bins",
        ])
        .current_dir(repo)
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "cargo build failed");
    Ok(repo
        .join("target")
        .join(if release { "release" } else { "debug" }))
}

/// Builds and imports the node's images: fastvirt's from `binaries` under the state's tag, the
/// sidecars `chart_repo`'s chart names.
pub(super) fn import_images(
    state: &mut State,
    layout: &Layout,
    chart_repo: Option<&Path>,
    binaries: &Path,
) -> Result<()> {
    state.fastvirt_binaries = binaries
        .canonicalize()
        .unwrap_or_else(|_| binaries.to_owned());
    state.save()?;
    for spec in image_specs(state, chart_repo, binaries)? {
        let file_name = spec
            .reference
            .rsplit('/')
            .next()
            .unwrap_or("image")
            .replace(':', "_");
        let archive = layout.images_dir().join(format!("{file_name}.tar"));
        images::write_archive(&spec, &archive)
            .with_context(|| format!("building image {}", spec.reference))?;
        let path = archive.to_string_lossy();
        ctr(layout, &["images", "import", &path])
            .with_context(|| format!("importing image {}", spec.reference))?;
        // The archive is in containerd now; the copy would only fill the disk.
        let _ = std::fs::remove_file(&archive);
    }
    Ok(())
}
