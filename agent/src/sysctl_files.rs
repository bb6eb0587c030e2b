//! The sysctl configuration files that systemd-sysctl (or `sysctl --system`) applies at boot: a
//! value the agent sets at runtime is overridden the next time they are applied, so the plan
//! names the file that would win.

use crate::hostfs::HostFs;
use std::collections::BTreeMap;

/// Directories in increasing precedence: a file name in a later directory hides the same name in
/// an earlier one (systemd's sysctl.d(5) rules).
const DIRECTORIES: &[&str] = &[
    "usr/lib/sysctl.d",
    "lib/sysctl.d",
    "run/sysctl.d",
    "etc/sysctl.d",
];
/// Read last, after every sysctl.d file.
const LEGACY_FILE: &str = "etc/sysctl.conf";

/// A sysctl assignment found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlFileSetting {
    pub file: String,
    pub value: String,
}

/// The normalised name: dots between components, as in `vm.swappiness`.
fn normalise(key: &str) -> String {
    let key = key.trim().trim_start_matches('-');
    if key.contains('.') {
        key.to_owned()
    } else {
        key.replace('/', ".")
    }
}

/// Assignments of one file in order; comments, blank lines and glob patterns are skipped.
pub fn parse_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with(';'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (normalise(key), value.trim().to_owned()))
        .filter(|(key, _)| !key.contains('*'))
        .collect()
}

/// For every sysctl set by a configuration file, the file and value that win at boot.
pub fn effective(fs: &dyn HostFs) -> BTreeMap<String, SysctlFileSetting> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for dir in DIRECTORIES {
        for name in fs.list(dir).into_iter().filter(|n| n.ends_with(".conf")) {
            files.insert(name.clone(), format!("{dir}/{name}"));
        }
    }
    let mut ordered: Vec<String> = files.into_values().collect();
    ordered.push(LEGACY_FILE.to_owned());
    let mut winners = BTreeMap::new();
    for path in ordered {
        let Ok(text) = fs.read(&path) else { continue };
        for (key, value) in parse_file(&text) {
            winners.insert(
                key,
                SysctlFileSetting {
                    file: format!("/{path}"),
                    value,
                },
            );
        }
    }
    winners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings_and_skips_comments() {
        let parsed = parse_file(
            "# c\n; c\nvm.swappiness = 10\nkernel/numa_balancing=0\n-net.core.busy_poll = 5\nnet.*.x = 1\n",
        );
        assert_eq!(
            parsed,
            vec![
                ("vm.swappiness".to_owned(), "10".to_owned()),
                ("kernel.numa_balancing".to_owned(), "0".to_owned()),
                ("net.core.busy_poll".to_owned(), "5".to_owned()),
            ]
        );
    }
}
