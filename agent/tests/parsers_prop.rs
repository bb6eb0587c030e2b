//! Property tests of the parsers: kernel CPU lists and masks, /proc/interrupts and schedstat
//! round-trip what the kernel would print, and never panic on arbitrary input.

use fastvirt_agent::{cpumask, host, interrupts, schedstat, sysctl_files};
use fastvirt_api::cpuset::CpuSet;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::fmt::Write as _;

fn cpu_sets() -> impl Strategy<Value = BTreeSet<u32>> {
    prop::collection::btree_set(0u32..1024, 0..200)
}

proptest! {
    #[test]
    fn cpu_lists_round_trip(cpus in cpu_sets()) {
        let set: CpuSet = cpus.iter().copied().collect();
        let text = set.to_string();
        let parsed = CpuSet::parse(&text).unwrap();
        prop_assert_eq!(parsed.iter().collect::<BTreeSet<_>>(), cpus);
    }

    #[test]
    fn cpu_masks_round_trip(cpus in cpu_sets()) {
        let set: CpuSet = cpus.iter().copied().collect();
        let mask = cpumask::format(&set);
        prop_assert_eq!(cpumask::parse(&mask).unwrap(), set.clone());
        // The kernel pads every group to eight digits; those parse the same.
        let padded = mask.split(',').map(|g| format!("{g:0>8}")).collect::<Vec<_>>().join(",");
        prop_assert_eq!(cpumask::parse(&padded).unwrap(), set);
    }

    #[test]
    fn the_canonical_fast_path_agrees_with_the_parser(text in "[0-9,-]{0,14}", cpus in cpu_sets()) {
        if host::is_canonical_cpu_list(&text) {
            prop_assert_eq!(CpuSet::parse(&text).unwrap().to_string(), text);
        }
        let printed = cpus.iter().copied().collect::<CpuSet>().to_string();
        prop_assert_eq!(host::is_canonical_cpu_list(&printed), !cpus.is_empty());
    }

    #[test]
    fn cpu_list_and_mask_parsers_never_panic(text in ".{0,64}") {
        let _ = CpuSet::parse(&text);
        let _ = cpumask::parse(&text);
    }

    #[test]
    fn interrupts_round_trip(
        cpus in 1usize..16,
        lines in prop::collection::btree_map(0u32..5000, ("[a-z][a-z0-9_.-]{0,12}", prop::collection::vec(0u64..u64::from(u32::MAX), 16)), 0..40),
    ) {
        let mut text = String::new();
        for cpu in 0..cpus {
            let _ = write!(text, "{:>11}", format!("CPU{cpu}"));
        }
        text.push('\n');
        for (irq, (name, counts)) in &lines {
            let _ = write!(text, "{irq:>4}:");
            for count in &counts[..cpus] {
                let _ = write!(text, " {count:>10}");
            }
            let _ = writeln!(text, "  PCI-MSIX-0000:00:01.0   1-edge      {name}");
        }
        text.push_str(" NMI:          0          0   Non-maskable interrupts\nERR:          0\n");
        let parsed = interrupts::parse(&text).unwrap();
        prop_assert_eq!(parsed.cpus.len(), cpus);
        prop_assert_eq!(parsed.lines.len(), lines.len());
        for (line, (irq, (name, counts))) in parsed.lines.iter().zip(&lines) {
            prop_assert_eq!(line.irq, *irq);
            prop_assert_eq!(&line.counts[..], &counts[..cpus]);
            prop_assert_eq!(line.action(), name.as_str());
        }
    }

    #[test]
    fn interrupts_parser_never_panics(text in "(.{0,40}\n){0,8}") {
        let _ = interrupts::parse(&text);
    }

    #[test]
    fn schedstat_round_trips(
        version in 15u32..=17,
        cpus in prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 1..32),
    ) {
        let mut text = format!("version {version}\ntimestamp 4295012345\n");
        for (cpu, (run, wait, slices)) in cpus.iter().enumerate() {
            let _ = writeln!(text, "cpu{cpu} 0 0 0 0 0 0 {run} {wait} {slices}");
            let _ = writeln!(text, "domain0 00000003 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36");
        }
        let parsed = schedstat::parse(&text).unwrap();
        prop_assert_eq!(parsed.version, version);
        for (cpu, (run, wait, slices)) in cpus.iter().enumerate() {
            let stats = parsed.cpus[&(cpu as u32)];
            prop_assert_eq!((stats.run_ns, stats.wait_ns, stats.timeslices), (u64::from(*run), u64::from(*wait), u64::from(*slices)));
        }
    }

    #[test]
    fn schedstat_and_sysctl_parsers_never_panic(text in "(.{0,40}\n){0,8}") {
        let _ = schedstat::parse(&text);
        let _ = schedstat::parse_task(&text);
        let _ = sysctl_files::parse_file(&text);
    }
}
