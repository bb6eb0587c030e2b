//! `/proc/schedstat` (`schedstat::parse`) and a task's `schedstat` (`schedstat::parse_task`) on
//! arbitrary text; a parsed task line prints back to the same values.
#![no_main]

use fastvirt_agent::schedstat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(parsed) = schedstat::parse(text) {
        assert!((15..=17).contains(&parsed.version));
        assert!(parsed.cpus.len() <= text.lines().count());
    }
    if let Ok(task) = schedstat::parse_task(text) {
        let printed = format!("{} {} {}\n", task.run_ns, task.wait_ns, task.timeslices);
        assert_eq!(schedstat::parse_task(&printed), Ok(task));
    }
});
