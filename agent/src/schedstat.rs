//! Scheduler statistics: `/proc/schedstat` (per CPU, kernels with CONFIG_SCHEDSTATS) and the
//! per-task `/proc/<pid>/task/<tid>/schedstat` (CONFIG_SCHED_INFO) the agent falls back to.

use std::collections::BTreeMap;

/// Run and wait totals of one CPU since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuSchedstat {
    /// Time tasks ran on this CPU (field 7 of the cpu line).
    pub run_ns: u64,
    /// Time runnable tasks waited on this CPU's run queue (field 8).
    pub wait_ns: u64,
    /// Number of timeslices run (field 9).
    pub timeslices: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedstat {
    pub version: u32,
    pub cpus: BTreeMap<u32, CpuSchedstat>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedstatError {
    #[error("/proc/schedstat has no version line")]
    NoVersion,
    #[error("/proc/schedstat version {0} is not one the agent reads (15 to 17)")]
    UnsupportedVersion(u32),
    #[error("/proc/schedstat: malformed cpu line {0:?}")]
    CpuLine(String),
    #[error("task schedstat: malformed line {0:?}")]
    TaskLine(String),
}

const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 15..=17;

pub fn parse(text: &str) -> Result<Schedstat, SchedstatError> {
    let mut version = None;
    let mut cpus = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("version") => {
                let number = words
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or(SchedstatError::NoVersion)?;
                if !SUPPORTED_VERSIONS.contains(&number) {
                    return Err(SchedstatError::UnsupportedVersion(number));
                }
                version = Some(number);
            }
            Some(name) if name.starts_with("cpu") => {
                let malformed = || SchedstatError::CpuLine(line.to_owned());
                let cpu: u32 = name[3..].parse().map_err(|_| malformed())?;
                let fields = words
                    .map(|w| w.parse::<u64>().map_err(|_| malformed()))
                    .collect::<Result<Vec<u64>, _>>()?;
                if fields.len() < 9 {
                    return Err(malformed());
                }
                cpus.insert(
                    cpu,
                    CpuSchedstat {
                        run_ns: fields[6],
                        wait_ns: fields[7],
                        timeslices: fields[8],
                    },
                );
            }
            _ => {}
        }
    }
    Ok(Schedstat {
        version: version.ok_or(SchedstatError::NoVersion)?,
        cpus,
    })
}

/// One task's `schedstat`: run time, run-queue wait (`run_delay`) and timeslices.
pub fn parse_task(text: &str) -> Result<CpuSchedstat, SchedstatError> {
    let fields = text
        .split_whitespace()
        .map(|w| w.parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| SchedstatError::TaskLine(text.to_owned()))?;
    match fields[..] {
        [run_ns, wait_ns, timeslices] => Ok(CpuSchedstat {
            run_ns,
            wait_ns,
            timeslices,
        }),
        _ => Err(SchedstatError::TaskLine(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_lines_of_version_15() {
        let text = "version 15\ntimestamp 4295\n\
            cpu0 0 0 0 0 0 0 2000 300 40\n\
            domain0 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
            cpu1 0 0 0 0 0 0 5000 700 90\n";
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.version, 15);
        assert_eq!(
            parsed.cpus[&1],
            CpuSchedstat {
                run_ns: 5000,
                wait_ns: 700,
                timeslices: 90
            }
        );
        assert_eq!(
            parse("version 14\n"),
            Err(SchedstatError::UnsupportedVersion(14))
        );
        assert!(parse("version 16\ncpu0 1 2\n").is_err());
        assert_eq!(
            parse_task("221636363 22568572 596\n").unwrap().wait_ns,
            22568572
        );
    }
}
