//! `fastvirt-agent apply` killed with SIGKILL at random points of its work, on a generated 256-CPU
//! host tree with about 4,000 IRQs: whatever the point, every file holds either its original or
//! its applied value, and afterwards `restore` gives back exactly the original host (every round)
//! and `apply` exactly the fully applied one (every other pair of rounds, before that restore).
//! Half of the kills land at a random time, half right after the journal appears, i.e. once the
//! writes have begun.
//!
//! The kill points come from a seed the test prints; `FASTVIRT_CHAOS_SEED=<seed>` replays a run.

use fastvirt_agent::fixture::{self, FixtureSpec};
use fastvirt_agent::journal::JOURNAL_PATH;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills; bounded, each a fresh host tree.
const ROUNDS: usize = 24;

type Files = BTreeMap<String, String>;

struct Trees {
    dir: tempfile::TempDir,
    profile: PathBuf,
    original: Files,
}

impl Trees {
    fn new() -> Self {
        // Each round copies a tree of some 30,000 small files: in memory where there is a tmpfs.
        let dir = fastvirt_agent::bench::memory_backed_tempdir().expect("temporary directory");
        let spec = FixtureSpec::bench_256_cpus();
        let profile = dir.path().join("profile.yaml");
        let mut profile_spec = fastvirt_agent::bench::bench_profile(&spec).unwrap();
        // The agent reads the THP mode back in the kernel's "always [madvise] never" form, which
        // a plain file in this tree does not produce; every other knob reads back what was written.
        profile_spec.transparent_hugepages = None;
        let yaml = serde_yaml::to_string(&profile_spec).expect("the profile serializes");
        std::fs::write(&profile, yaml).unwrap();
        let pristine = dir.path().join("pristine");
        fixture::write_host(&pristine, &spec).expect("fixture tree");
        let original = fixture::host_files(&pristine).unwrap();
        Self {
            dir,
            profile,
            original,
        }
    }

    /// A fresh copy of the original host tree.
    fn fresh(&self, name: &str) -> PathBuf {
        let root = self.dir.path().join(name);
        let _ = std::fs::remove_dir_all(&root);
        copy_tree(&self.dir.path().join("pristine"), &root);
        root
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success(), "copying {}", from.display());
}

fn agent(args: &[&str], root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fastvirt-agent"));
    command
        .args(args)
        .arg("--host-root")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn run_to_end(args: &[&str], root: &Path) {
    let output = agent(args, root).output().expect("the agent runs");
    assert!(
        output.status.success(),
        "fastvirt-agent {args:?} on {}: {}",
        root.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Where a killed apply left a tree.
#[derive(Debug, Default)]
struct Outcomes {
    untouched: usize,
    partial: usize,
    complete: usize,
}

#[test]
fn a_killed_apply_leaves_the_host_restorable_and_appliable() {
    let trees = Trees::new();
    let profile = trees.profile.to_str().unwrap().to_owned();
    let apply = ["apply", "--profile", profile.as_str()];

    let full = trees.fresh("full");
    let started = Instant::now();
    run_to_end(&apply, &full);
    let apply_time = started.elapsed();
    let applied = fixture::host_files(&full).unwrap();
    let changed: Vec<&String> = applied
        .iter()
        .filter(|(path, value)| trees.original.get(*path) != Some(*value))
        .map(|(path, _)| path)
        .collect();
    assert!(
        changed.len() > 1000,
        "the profile changes thousands of files, so kills land between writes ({} changed)",
        changed.len()
    );

    let seed = std::env::var("FASTVIRT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!(
        "kill mid-apply: seed {seed} (FASTVIRT_CHAOS_SEED={seed} replays it); one apply takes {apply_time:?}"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut outcomes = Outcomes::default();
    for round in 0..ROUNDS {
        let root = trees.fresh(&format!("killed-{round}"));
        let mut child = agent(&apply, &root).spawn().expect("the agent starts");
        let journal = root.join(JOURNAL_PATH);
        if round % 2 == 0 {
            std::thread::sleep(apply_time.mul_f64(rng.f64() * 1.2));
        } else {
            // Right after the journal is on disk: the writes have begun or are about to.
            let deadline = Instant::now() + apply_time * 20 + Duration::from_secs(5);
            while !journal.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let _ = child.kill();
        let status = child.wait().expect("the agent is reaped");

        let killed = fixture::host_files(&root).unwrap();
        for (path, value) in &killed {
            // A write the kill interrupted before its rename; the next write of the file takes
            // it up, and the comparisons below show none is left.
            if path.ends_with(".fastvirt-new") {
                continue;
            }
            assert!(
                trees.original.get(path) == Some(value) || applied.get(path) == Some(value),
                "round {round} ({status}): {path} holds {value:?}, neither its original {:?} nor its applied value {:?}",
                trees.original.get(path),
                applied.get(path)
            );
        }
        let killed: Files = killed
            .into_iter()
            .filter(|(path, _)| !path.ends_with(".fastvirt-new"))
            .collect();
        if killed == trees.original {
            outcomes.untouched += 1;
        } else if killed == applied {
            outcomes.complete += 1;
        } else {
            outcomes.partial += 1;
        }

        // Either way out of a killed apply: back to the original, or on to the applied host.
        if round % 4 < 2 {
            run_to_end(&["restore"], &root);
            assert!(
                fixture::host_files(&root).unwrap() == trees.original,
                "round {round} ({status}): restore after the kill gives back the original host"
            );
        } else {
            run_to_end(&apply, &root);
            assert!(
                fixture::host_files(&root).unwrap() == applied,
                "round {round} ({status}): apply after the kill gives the fully applied host"
            );
            run_to_end(&["restore"], &root);
            assert!(
                fixture::host_files(&root).unwrap() == trees.original,
                "round {round} ({status}): restore after the finished apply gives back the original host"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
    eprintln!("kill mid-apply: {outcomes:?}");
}
