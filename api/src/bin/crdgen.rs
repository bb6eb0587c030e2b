//! Writes the CRDs generated from the API types into a directory (default `crds/`).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("crds"));
    std::fs::create_dir_all(&dir)?;
    for (file, crd) in fastvirt_api::crds() {
        std::fs::write(dir.join(file), fastvirt_api::crd_yaml(&crd))?;
        println!("wrote {}", dir.join(file).display());
    }
    Ok(())
}
