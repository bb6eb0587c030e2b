//! The journal of original values: written atomically on the host before the first change, so a
//! restore (or a later agent after a crash) can put back exactly what was there before fastvirt.

use crate::hostfs::{HostFs, HostFsError};
use crate::plan::{Change, Compare, Target};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const JOURNAL_PATH: &str = "var/lib/fastvirt/agent/journal.json";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("reading the journal: {0}")]
    Read(HostFsError),
    #[error("/{JOURNAL_PATH} is not a journal this agent understands: {0}")]
    Format(serde_json::Error),
    #[error("/{JOURNAL_PATH} has version {0}; this agent reads version {VERSION}")]
    Version(u32),
    #[error("writing the journal: {0}")]
    Write(HostFsError),
}

/// The value a path held before fastvirt first changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Original {
    pub setting: String,
    /// `None`: the file did not exist (a configuration file the agent created).
    pub value: Option<String>,
    pub compare: Compare,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    pub version: u32,
    /// By path relative to the host root.
    pub originals: BTreeMap<String, Original>,
    /// IRQs whose affinity the kernel refused: kernel-managed, not worth another write.
    #[serde(default)]
    pub managed_irqs: BTreeSet<u32>,
}

impl Default for Journal {
    fn default() -> Self {
        Self {
            version: VERSION,
            originals: BTreeMap::new(),
            managed_irqs: BTreeSet::new(),
        }
    }
}

impl Journal {
    pub fn load(fs: &dyn HostFs) -> Result<Self, JournalError> {
        let text = match fs.read(JOURNAL_PATH) {
            Ok(text) => text,
            Err(HostFsError::NotFound { .. }) => return Ok(Self::default()),
            Err(e) => return Err(JournalError::Read(e)),
        };
        let journal: Journal = serde_json::from_str(&text).map_err(JournalError::Format)?;
        if journal.version != VERSION {
            return Err(JournalError::Version(journal.version));
        }
        Ok(journal)
    }

    /// Writes the journal (temporary file, fsync, rename), or removes it once it holds nothing.
    pub fn save(&self, fs: &dyn HostFs) -> Result<(), JournalError> {
        if self.originals.is_empty() && self.managed_irqs.is_empty() {
            return fs.remove_file(JOURNAL_PATH).map_err(JournalError::Write);
        }
        let text = serde_json::to_string_pretty(self).map_err(JournalError::Format)?;
        fs.replace_file(JOURNAL_PATH, &(text + "\n"))
            .map_err(JournalError::Write)
    }

    /// `(setting, value now)` of every journaled path: each is a setting the agent changed and
    /// still owns, so this is what it has applied. Configuration files show as `set`.
    pub fn current_values(&self, fs: &dyn HostFs) -> Vec<(String, String)> {
        self.originals
            .iter()
            .map(|(path, original)| {
                let value = match original.target {
                    Target::ConfigFile => "set".to_owned(),
                    _ => {
                        let raw = fs.read(path).unwrap_or_default();
                        original.compare.canonical(&raw).unwrap_or(raw)
                    }
                };
                (original.setting.clone(), value)
            })
            .collect()
    }

    /// Records `change.current` as the original unless an earlier apply already recorded one:
    /// the first value seen is the host's own. Returns whether the journal grew.
    pub fn remember(&mut self, change: &Change, file_existed: bool) -> bool {
        if self.originals.contains_key(&change.path) {
            return false;
        }
        let value =
            (file_existed || change.target != Target::ConfigFile).then(|| change.current.clone());
        self.originals.insert(
            change.path.clone(),
            Original {
                setting: change.setting.clone(),
                value,
                compare: change.compare,
                target: change.target,
            },
        );
        true
    }
}
