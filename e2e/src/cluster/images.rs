//! Container images without a Docker engine: one layer of files taken from this host (a binary
//! and the shared libraries `ldd` lists for it), an image config, and a docker-archive tarball that
//! `ctr images import` loads into containerd.

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What goes into one image.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// The full reference containerd stores it under, e.g. `localhost/fastvirt/fastvirt-csi:dev`.
    pub reference: String,
    /// Files: host source, path in the image.
    pub files: Vec<(PathBuf, PathBuf)>,
    /// Symbolic links: path in the image, target.
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `uid:gid`; root when empty.
    pub user: String,
}

impl ImageSpec {
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            ..Self::default()
        }
    }

    /// Adds a host program at `dest` with every shared library it loads, at the libraries' own paths.
    pub fn program(mut self, host: &Path, dest: impl Into<PathBuf>) -> Result<Self> {
        for library in shared_libraries(host)? {
            if !self.files.iter().any(|(_, d)| *d == library) {
                self.files.push((library.clone(), library));
            }
        }
        self.files.push((host.to_owned(), dest.into()));
        Ok(self)
    }

    /// Adds a host file at the same path, if the host has it.
    pub fn optional_file(mut self, host: &Path) -> Self {
        if host.is_file() {
            self.files.push((host.to_owned(), host.to_owned()));
        }
        self
    }

    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }
}

/// The shared libraries (and the dynamic loader) a host program loads, from `ldd`; none for a
/// static program.
pub fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(program)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || text.contains("not a dynamic executable") {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("not a dynamic executable") || text.contains("statically linked") {
            return Ok(Vec::new());
        }
        ensure!(
            output.status.success(),
            "ldd {}: {}",
            program.display(),
            stderr.trim()
        );
    }
    Ok(parse_ldd(&text))
}

/// Paths from `ldd` output: `lib.so => /path (0x…)` and `/path (0x…)`; the vDSO has none.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Writes `spec` as a docker-archive tarball at `out`.
pub fn write_archive(spec: &ImageSpec, out: &Path) -> Result<()> {
    let work = out.with_extension("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let layer_path = work.join("layer.tar");
    write_layer(spec, &layer_path)?;
    let layer_digest = sha256_file(&layer_path)?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "User": spec.user,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created_by": "fastvirt-cluster (files from the build host)"}],
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = hex(&Sha256::digest(&config_bytes));
    let manifest = serde_json::json!([{
        "Config": format!("{config_digest}.json"),
        "RepoTags": [spec.reference],
        "Layers": [format!("{layer_digest}/layer.tar")],
    }]);
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut archive = tar::Builder::new(BufWriter::new(file));
    append_bytes(
        &mut archive,
        &format!("{config_digest}.json"),
        &config_bytes,
    )?;
    append_bytes(
        &mut archive,
        "manifest.json",
        &serde_json::to_vec(&manifest)?,
    )?;
    archive
        .append_path_with_name(&layer_path, format!("{layer_digest}/layer.tar"))
        .context("adding the layer")?;
    archive.into_inner()?.flush()?;
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}

fn write_layer(spec: &ImageSpec, path: &Path) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut layer = tar::Builder::new(BufWriter::new(file));
    layer.follow_symlinks(true);
    // GNU sparse entries (type S) are something containerd's unpacker refuses.
    layer.sparse(false);
    let mut dirs = BTreeSet::new();
    let all_dests = spec
        .files
        .iter()
        .map(|(_, d)| d)
        .chain(spec.symlinks.iter().map(|(d, _)| d));
    for dest in all_dests {
        ensure!(dest.is_absolute(), "{} must be absolute", dest.display());
        let mut parent = dest.parent();
        while let Some(dir) = parent.filter(|d| *d != Path::new("/")) {
            dirs.insert(dir.to_owned());
            parent = dir.parent();
        }
    }
    // /tmp for programs that want one.
    dirs.insert(PathBuf::from("/tmp"));
    for dir in &dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == Path::new("/tmp") {
            0o1777
        } else {
            0o755
        });
        header.set_size(0);
        layer.append_data(&mut header, relative(dir), std::io::empty())?;
    }
    for (source, dest) in &spec.files {
        let mut file =
            File::open(source).with_context(|| format!("opening {}", source.display()))?;
        layer
            .append_file(relative(dest), &mut file)
            .with_context(|| format!("adding {}", source.display()))?;
    }
    for (dest, target) in &spec.symlinks {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        layer.append_link(&mut header, relative(dest), target)?;
    }
    layer.into_inner()?.flush()?;
    Ok(())
}

fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

fn append_bytes<W: Write>(archive: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive.append_data(&mut header, name, bytes)?;
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The applets of a busybox binary, for the toolbox image's links.
pub fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let output = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !output.status.success() {
        bail!("{} --list failed", busybox.display());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn archive_has_manifest_config_and_layer() {
        let dir = tempfile::tempdir().unwrap();
        let payload = dir.path().join("hello");
        std::fs::write(&payload, b"#!/bin/sh\necho hi\n").unwrap();
        let spec = ImageSpec {
            reference: "localhost/test/hello:1".into(),
            files: vec![(payload, PathBuf::from("/usr/local/bin/hello"))],
            symlinks: vec![(
                PathBuf::from("/bin/hi"),
                PathBuf::from("/usr/local/bin/hello"),
            )],
            entrypoint: vec!["/usr/local/bin/hello".into()],
            ..ImageSpec::default()
        };
        let out = dir.path().join("hello.tar");
        write_archive(&spec, &out).unwrap();
        let mut archive = tar::Archive::new(File::open(&out).unwrap());
        let mut names = Vec::new();
        let mut manifest = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name == "manifest.json" {
                entry.read_to_end(&mut manifest).unwrap();
            }
            names.push(name);
        }
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(manifest[0]["RepoTags"][0], "localhost/test/hello:1");
        let layer = manifest[0]["Layers"][0].as_str().unwrap();
        assert!(names.iter().any(|n| n == layer), "{names:?}");
        let config = manifest[0]["Config"].as_str().unwrap();
        assert!(names.iter().any(|n| n == config), "{names:?}");
    }
}
