//! The kernel's hexadecimal CPU masks (`cpumask::parse`, `cpumask::format`): a parsed mask formats
//! to a mask that parses to the same CPUs, and formatting is canonical.
#![no_main]

use fastvirt_agent::cpumask;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(cpus) = cpumask::parse(text) else {
        return;
    };
    let formatted = cpumask::format(&cpus);
    assert_eq!(
        cpumask::parse(&formatted),
        Ok(cpus.clone()),
        "formatted as {formatted}"
    );
    assert_eq!(
        cpumask::format(&cpumask::parse(&formatted).unwrap()),
        formatted
    );
    assert!(
        formatted == "0" || !formatted.starts_with('0'),
        "{formatted} is not canonical"
    );
});
