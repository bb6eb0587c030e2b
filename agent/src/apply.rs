//! Applying a plan: journal the originals, write, read back, and undo this apply's writes when one
//! fails. Restoring puts every journaled original back.

use crate::hostfs::{HostFs, HostFsError};
use crate::journal::{Journal, JournalError, Original};
use crate::plan::{Change, Plan, Target, Unchangeable, size_name};
use fastvirt_api::cpuset::CpuSet;
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{setting}: {source}; {rollback}")]
    Write {
        setting: String,
        source: HostFsError,
        rollback: RollbackOutcome,
    },
    #[error("{setting}: wrote {desired:?} but read back {read_back:?}; {rollback}")]
    Verify {
        setting: String,
        desired: String,
        read_back: String,
        rollback: RollbackOutcome,
    },
}

/// What undoing a failed apply achieved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RollbackOutcome {
    pub restored: usize,
    pub failures: Vec<String>,
}

impl std::fmt::Display for RollbackOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.failures.is_empty() {
            write!(
                f,
                "rolled back the {} earlier change(s) of this apply",
                self.restored
            )
        } else {
            write!(
                f,
                "rolled back {} change(s); could not roll back: {}",
                self.restored,
                self.failures.join("; ")
            )
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub setting: String,
    pub value: String,
}

/// A hugepage pool the kernel filled only partly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shortfall {
    pub setting: String,
    pub path: String,
    pub wanted: u64,
    pub got: u64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub applied: Vec<Applied>,
    pub unchangeable: Vec<Unchangeable>,
    pub shortfalls: Vec<Shortfall>,
    /// IRQs whose new affinity the kernel accepted but does not deliver by yet (it moves an IRQ
    /// when it next fires).
    pub pending: Vec<String>,
    /// Settings an earlier profile changed that this one does not want: put back to the original.
    pub reverted: Vec<Applied>,
    /// Reverts that failed; they stay in the journal.
    pub revert_failures: Vec<String>,
}

fn write_value(
    fs: &dyn HostFs,
    target: Target,
    path: &str,
    value: &str,
) -> Result<(), HostFsError> {
    match target {
        Target::ConfigFile => fs.replace_file(path, value),
        _ => fs.write(path, value),
    }
}

/// Undoes `done` in reverse; `absent_before` are the configuration files this apply created.
fn rollback(
    fs: &dyn HostFs,
    absent_before: &BTreeSet<String>,
    done: &[&Change],
) -> RollbackOutcome {
    let mut outcome = RollbackOutcome::default();
    for change in done.iter().rev() {
        let result = if absent_before.contains(&change.path) {
            fs.remove_file(&change.path)
        } else {
            write_value(fs, change.target, &change.path, &change.current)
        };
        match result {
            Ok(()) => outcome.restored += 1,
            Err(e) => outcome.failures.push(e.to_string()),
        }
    }
    outcome
}

/// Free memory of the NUMA node (or the host) now, to explain a shortfall.
fn free_mib(fs: &dyn HostFs, numa_node: Option<u32>) -> Option<u64> {
    let path = match numa_node {
        Some(node) => format!("sys/devices/system/node/node{node}/meminfo"),
        None => "proc/meminfo".to_owned(),
    };
    let text = fs.read(&path).ok()?;
    let kb: u64 = text
        .lines()
        .find(|l| l.contains("MemFree:"))?
        .split_whitespace()
        .rev()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024)
}

fn shortfall(
    fs: &dyn HostFs,
    change: &Change,
    (size_kb, numa_node): (u64, Option<u32>),
    got: u64,
    wanted: u64,
) -> Shortfall {
    let free = free_mib(fs, numa_node)
        .map(|mib| format!("{mib} MiB"))
        .unwrap_or_else(|| "unknown".to_owned());
    let mut message = format!(
        "{}: the kernel allocated {got} of {wanted} {} pages; free memory there now: {free}",
        change.setting,
        size_name(size_kb)
    );
    if size_kb >= 1_048_576 {
        message.push_str(&format!(
            "; 1 GiB pages need contiguous memory: boot with hugepagesz=1G hugepages={wanted}"
        ));
    } else {
        message.push_str("; memory is fragmented or in use: free some, or allocate at boot");
    }
    Shortfall {
        setting: change.setting.clone(),
        path: change.path.clone(),
        wanted,
        got,
        message,
    }
}

/// Applies `plan.changes` in order. The journal on the host gets every original before the first
/// write. On a failed write or read-back, this apply's earlier writes are undone and the error
/// returned; a refused IRQ affinity (a kernel-managed IRQ) and a short hugepage pool are reported,
/// not failures.
pub fn apply(fs: &dyn HostFs, plan: &Plan) -> Result<ApplyReport, ApplyError> {
    let mut journal = Journal::load(fs)?;
    let mut grew = false;
    let mut absent_before = BTreeSet::new();
    for change in &plan.changes {
        // Kernel files exist by construction (the plan read them); only configuration files may not.
        let exists = change.target != Target::ConfigFile || fs.exists(&change.path);
        if !exists {
            absent_before.insert(change.path.clone());
        }
        grew |= journal.remember(change, exists);
    }
    if grew {
        journal.save(fs)?;
    }
    let mut report = ApplyReport {
        unchangeable: plan.unchangeable.clone(),
        ..ApplyReport::default()
    };
    let mut done: Vec<&Change> = Vec::new();
    let managed_before = journal.managed_irqs.len();
    for change in &plan.changes {
        if let Err(source) = write_value(fs, change.target, &change.path, &change.desired) {
            if let (Target::IrqAffinity { irq }, true) = (change.target, source.refused_by_kernel())
            {
                journal.managed_irqs.insert(irq);
                journal.originals.remove(&change.path);
                report.unchangeable.push(Unchangeable {
                    setting: change.setting.clone(),
                    reason: format!(
                        "kernel-managed IRQ (or one its interrupt controller cannot move): the \
                         kernel refused the affinity ({source}); keep it off isolated CPUs with \
                         isolcpus=managed_irq,..."
                    ),
                });
                continue;
            }
            let rollback = rollback(fs, &absent_before, &done);
            journal.save(fs)?;
            return Err(ApplyError::Write {
                setting: change.setting.clone(),
                source,
                rollback,
            });
        }
        done.push(change);
        let raw = fs.read(&change.path).unwrap_or_default();
        let read_back = change.compare.canonical(&raw).unwrap_or(raw);
        if let Target::Hugepages { size_kb, numa_node } = change.target {
            let got: u64 = read_back.parse().unwrap_or(0);
            let wanted: u64 = change.desired.parse().unwrap_or(0);
            if got < wanted {
                let pool = (size_kb, numa_node);
                report
                    .shortfalls
                    .push(shortfall(fs, change, pool, got, wanted));
                continue;
            }
        } else if read_back != change.desired {
            let rollback = rollback(fs, &absent_before, &done);
            journal.save(fs)?;
            return Err(ApplyError::Verify {
                setting: change.setting.clone(),
                desired: change.desired.clone(),
                read_back,
                rollback,
            });
        }
        if let Target::IrqAffinity { irq } = change.target {
            let effective_path = format!("proc/irq/{irq}/effective_affinity_list");
            if let Some(effective) = fs
                .read_trimmed(&effective_path)
                .and_then(|e| CpuSet::parse(&e).ok())
            {
                let desired = CpuSet::parse(&change.desired).unwrap_or_default();
                if effective.intersection(&desired) != effective {
                    report.pending.push(format!(
                        "{}: set to {}, still delivered on {effective} until it next fires",
                        change.setting, change.desired
                    ));
                }
            }
        }
        report.applied.push(Applied {
            setting: change.setting.clone(),
            value: change.desired.clone(),
        });
    }
    let journaled_before = journal.originals.len();
    journal
        .originals
        .retain(|path, _| !plan.hands_off_paths.contains(path));
    let unwanted: Vec<String> = journal
        .originals
        .keys()
        .filter(|path| !plan.wanted_paths.contains(*path))
        .cloned()
        .collect();
    for path in &unwanted {
        let Some(original) = journal.originals.get(path) else {
            continue;
        };
        match put_back(fs, path, original) {
            Ok(value) => {
                report.reverted.push(Applied {
                    setting: original.setting.clone(),
                    value,
                });
                journal.originals.remove(path);
            }
            Err(error) => report
                .revert_failures
                .push(format!("{}: {error}", original.setting)),
        }
    }
    if journal.managed_irqs.len() != managed_before || journal.originals.len() != journaled_before {
        journal.save(fs)?;
    }
    Ok(report)
}

/// Writes a journaled original back and reads it back; the value shown on success.
fn put_back(fs: &dyn HostFs, path: &str, original: &Original) -> Result<String, HostFsError> {
    let Some(value) = &original.value else {
        fs.remove_file(path)?;
        return Ok("(file removed)".to_owned());
    };
    write_value(fs, original.target, path, value)?;
    let raw = fs.read(path)?;
    let read_back = original.compare.canonical(&raw).unwrap_or(raw);
    if &read_back == value {
        Ok(value.clone())
    } else {
        Err(HostFsError::Write {
            path: path.to_owned(),
            value: value.clone(),
            source: std::io::Error::other(format!("read back {read_back:?}")),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub restored: Vec<Applied>,
    /// Paths that no longer exist (an IRQ whose device went away): nothing to restore.
    pub gone: Vec<String>,
    /// Still journaled, to retry: the write failed or read back something else.
    pub failed: Vec<String>,
}

/// Writes every journaled original back and forgets the ones that took.
pub fn restore(fs: &dyn HostFs) -> Result<RestoreReport, JournalError> {
    let mut journal = Journal::load(fs)?;
    let mut report = RestoreReport::default();
    let mut settled = Vec::new();
    for (path, original) in &journal.originals {
        match put_back(fs, path, original) {
            Ok(value) => {
                report.restored.push(Applied {
                    setting: original.setting.clone(),
                    value,
                });
                settled.push(path.clone());
            }
            Err(HostFsError::NotFound { .. }) => {
                report.gone.push(original.setting.clone());
                settled.push(path.clone());
            }
            Err(e) if original.value.is_some() && !fs.exists(path) => {
                report.gone.push(format!("{}: {e}", original.setting));
                settled.push(path.clone());
            }
            Err(e) => report.failed.push(format!("{}: {e}", original.setting)),
        }
    }
    for path in settled {
        journal.originals.remove(&path);
    }
    journal.save(fs)?;
    Ok(report)
}
