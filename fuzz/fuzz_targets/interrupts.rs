//! `/proc/interrupts` (`interrupts::parse`, `interrupts::action_of_line`) on arbitrary text.
#![no_main]

use fastvirt_agent::interrupts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for line in text.lines() {
        if let Some((_, action)) = interrupts::action_of_line(line) {
            assert!(!action.is_empty() && action.parse::<u64>().is_err());
        }
    }
    let Ok(parsed) = interrupts::parse(text) else {
        return;
    };
    assert!(!parsed.cpus.is_empty());
    for line in &parsed.lines {
        assert!(line.counts.len() <= parsed.cpus.len());
        let _ = line.action();
    }
});
