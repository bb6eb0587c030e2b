//! CPU lists in the kernel's format (`fastvirt_api::cpuset::CpuSet::parse`): a parsed list prints
//! to the canonical list, which parses to the same CPUs, and so does its hexadecimal mask.
#![no_main]

use fastvirt_agent::cpumask;
use fastvirt_api::cpuset::CpuSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(cpus) = CpuSet::parse(text) else {
        return;
    };
    assert!(cpus.iter().all(|cpu| cpu < 8192));
    let printed = cpus.to_string();
    assert_eq!(
        CpuSet::parse(&printed),
        Ok(cpus.clone()),
        "printed as {printed}"
    );
    assert_eq!(CpuSet::parse(&printed).unwrap().to_string(), printed);
    assert_eq!(cpumask::parse(&cpumask::format(&cpus)), Ok(cpus.clone()));
    let other = CpuSet::parse("0-3,64").unwrap();
    let both = cpus.intersection(&other);
    assert!(
        both.iter()
            .all(|cpu| cpus.contains(cpu) && other.contains(cpu))
    );
});
