//! CPU lists in the kernel's format (`0-3,8,10-11`).

use std::collections::BTreeSet;
use std::fmt;

/// A set of CPU numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuSet(BTreeSet<u32>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuSetError {
    #[error("{0:?} is not a CPU number or range (expected a list like 0-3,8)")]
    Syntax(String),
    #[error("range {0}-{1} runs backwards")]
    Backwards(u32, u32),
    #[error("CPU {0} is beyond the 8192 CPUs the kernel supports")]
    TooLarge(u32),
}

const MAX_CPUS: u32 = 8192;

impl CpuSet {
    pub fn parse(list: &str) -> Result<Self, CpuSetError> {
        let mut cpus = BTreeSet::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let number = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| CpuSetError::Syntax(part.to_owned()))
            };
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => (number(part)?, number(part)?),
            };
            if last < first {
                return Err(CpuSetError::Backwards(first, last));
            }
            if last >= MAX_CPUS {
                return Err(CpuSetError::TooLarge(last));
            }
            cpus.extend(first..=last);
        }
        Ok(Self(cpus))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    pub fn intersection(&self, other: &Self) -> Self {
        Self(self.0.intersection(&other.0).copied().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for CpuSet {
    /// The shortest kernel list: consecutive CPUs folded into ranges.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end = iter.next().unwrap_or(end);
            }
            parts.push(if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_folds() {
        let set = CpuSet::parse("0-3, 8,10-11,2").unwrap();
        assert_eq!(set.len(), 7);
        assert_eq!(set.to_string(), "0-3,8,10-11");
        assert!(CpuSet::parse("").unwrap().is_empty());
        assert_eq!(CpuSet::parse("5").unwrap().to_string(), "5");
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(CpuSet::parse("3-1"), Err(CpuSetError::Backwards(3, 1)));
        assert!(matches!(CpuSet::parse("a"), Err(CpuSetError::Syntax(_))));
        assert!(matches!(CpuSet::parse("1-"), Err(CpuSetError::Syntax(_))));
        assert_eq!(CpuSet::parse("0-9000"), Err(CpuSetError::TooLarge(9000)));
    }

    #[test]
    fn intersections() {
        let a = CpuSet::parse("0-7").unwrap();
        let b = CpuSet::parse("6-9").unwrap();
        assert_eq!(a.intersection(&b).to_string(), "6-7");
    }
}
