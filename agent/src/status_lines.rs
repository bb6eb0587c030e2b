//! Short, stable lines for TunedNode status: per-CPU and per-IRQ settings folded into one line
//! each, so a 256-CPU host with 4,000 IRQs still has a readable status of a few lines.

use std::collections::BTreeMap;

/// `cpu 12 governor` → `cpu * governor`; `irq 41 (nvme1q0) affinity` → `irq * affinity`.
fn template(setting: &str) -> String {
    let mut words: Vec<&str> = setting.split_whitespace().collect();
    if words.len() > 1 && words[1].parse::<u32>().is_ok() {
        words[1] = "*";
    }
    words.retain(|w| !(w.starts_with('(') && w.ends_with(')') && !w.contains("us)")));
    words.join(" ")
}

/// Folds `(setting, detail)` pairs with the same template and detail into `template: detail`, with
/// the count when more than one.
pub fn fold<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut groups: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (setting, detail) in items {
        *groups
            .entry((template(setting), detail.to_owned()))
            .or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((setting, detail), count)| {
            if count > 1 {
                format!("{setting}: {detail} (x{count})")
            } else {
                format!("{setting}: {detail}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_per_cpu_and_per_irq_settings() {
        let lines = fold([
            ("cpu 1 governor", "performance"),
            ("cpu 2 governor", "performance"),
            ("irq 41 (nvme1q0) affinity", "16,48"),
            ("irq 42 (nvme1q1) affinity", "16,48"),
            ("irq 43 (nvme0q1) affinity", "0,32"),
            ("sysctl vm.swappiness", "10"),
        ]);
        assert_eq!(
            lines,
            vec![
                "cpu * governor: performance (x2)",
                "irq * affinity: 0,32",
                "irq * affinity: 16,48 (x2)",
                "sysctl vm.swappiness: 10",
            ]
        );
    }
}
