//! The kernel's hexadecimal CPU masks (`/proc/irq/default_smp_affinity`, the workqueue cpumask):
//! 32-bit groups in hex, most significant first, separated by commas (`ff,ffffffff`).

use fastvirt_api::cpuset::CpuSet;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuMaskError {
    #[error("{0:?} is not a hexadecimal CPU mask")]
    Syntax(String),
}

pub fn parse(mask: &str) -> Result<CpuSet, CpuMaskError> {
    let mask = mask.trim();
    if mask.is_empty() {
        return Err(CpuMaskError::Syntax(mask.to_owned()));
    }
    let groups: Vec<&str> = mask.split(',').collect();
    let mut cpus = Vec::new();
    for (position, group) in groups.iter().rev().enumerate() {
        if group.is_empty() || group.len() > 8 {
            return Err(CpuMaskError::Syntax(mask.to_owned()));
        }
        let bits =
            u32::from_str_radix(group, 16).map_err(|_| CpuMaskError::Syntax(mask.to_owned()))?;
        let base =
            u32::try_from(position * 32).map_err(|_| CpuMaskError::Syntax(mask.to_owned()))?;
        cpus.extend(
            (0..32)
                .filter(|bit| bits & (1 << bit) != 0)
                .map(|bit| base + bit),
        );
    }
    Ok(cpus.into_iter().collect())
}

/// Formats like the kernel: the first group without padding, later groups as eight digits.
pub fn format(cpus: &CpuSet) -> String {
    let highest = cpus.iter().max().unwrap_or(0);
    let group_count = highest / 32 + 1;
    let mut groups = vec![0u32; group_count as usize];
    for cpu in cpus.iter() {
        groups[(cpu / 32) as usize] |= 1 << (cpu % 32);
    }
    let mut text = Vec::with_capacity(groups.len());
    for (i, bits) in groups.iter().rev().enumerate() {
        text.push(if i == 0 {
            format!("{bits:x}")
        } else {
            format!("{bits:08x}")
        });
    }
    text.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_round_trip() {
        let set = parse("ff,00000003").unwrap();
        assert_eq!(set.to_string(), "0-1,32-39");
        assert_eq!(format(&set), "ff,00000003");
        assert_eq!(format(&CpuSet::parse("0-1").unwrap()), "3");
        assert_eq!(parse("0").unwrap(), CpuSet::default());
        assert!(parse("xyz").is_err());
        assert!(parse("1,,2").is_err());
    }
}
