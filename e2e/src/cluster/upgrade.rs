//! Upgrading fastvirt in a running cluster the way a platform team would (docs/install.md):
//! fastvirt's images for the new version imported under a tag of their own, the new CRDs applied
//! server-side (Helm never changes a chart's `crds/`), then `helm upgrade` with the new chart,
//! waiting for the rollout and the driver's registration.

use super::State;
use super::chart_install::helm_upgrade;
use super::node_images::import_images;
use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};

/// What to upgrade to.
#[derive(Debug, Clone)]
pub struct UpgradeOptions {
    pub workdir: PathBuf,
    /// The checkout whose chart and CRDs are installed.
    pub repo: PathBuf,
    /// fastvirt-csi, fastvirt-operator and fastvirt-agent of the new version.
    pub binaries: PathBuf,
    /// The new images' tag; it must differ from the running one, so that every pod is replaced.
    pub image_tag: String,
}

pub fn upgrade(options: &UpgradeOptions) -> Result<State> {
    let workdir = options.workdir.canonicalize()?;
    let mut state =
        State::load(&workdir)?.with_context(|| format!("no cluster in {}", workdir.display()))?;
    ensure!(
        state.image_tag != options.image_tag,
        "the cluster already runs images tagged {}: give the new ones another --image-tag",
        options.image_tag
    );
    let layout = state.layout();
    state.image_tag = options.image_tag.clone();
    import_images(&mut state, &layout, Some(&options.repo), &options.binaries)?;
    let crds = options.repo.join("charts/fastvirt/crds");
    apply_crds(&state, &crds)?;
    helm_upgrade(&state, &layout, &options.repo, &[])?;
    state.save()?;
    Ok(state)
}

fn apply_crds(state: &State, crds: &Path) -> Result<()> {
    let kubectl = state.kubectl();
    let crds_arg = crds.to_string_lossy();
    kubectl
        .run(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=fastvirt-upgrade",
            "-f",
            &crds_arg,
        ])
        .with_context(|| format!("applying the CRDs in {}", crds.display()))?;
    for crd in std::fs::read_dir(crds)?.flatten() {
        let path = crd.path().to_string_lossy().into_owned();
        kubectl
            .run(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                &path,
            ])
            .with_context(|| format!("{path} established"))?;
    }
    Ok(())
}
