//! `/proc/interrupts`: which IRQs exist, what they are called and how often each CPU took them.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptLine {
    pub irq: u32,
    /// Interrupt counts per CPU column, in the order of the header's CPU numbers.
    pub counts: Vec<u64>,
    /// The rest of the line: controller, hardware IRQ and the device's action names.
    pub description: String,
}

impl InterruptLine {
    /// The last word of the description: the action name, e.g. `nvme0q3` or `virtio1-req.0`.
    pub fn action(&self) -> &str {
        self.description.split_whitespace().last().unwrap_or("")
    }
}

/// The IRQ number and action name of one line, without parsing the per-CPU counts; `None` for
/// the header and the named counters.
pub fn action_of_line(line: &str) -> Option<(u32, &str)> {
    let (label, rest) = line.split_once(':')?;
    let irq = label.trim().parse().ok()?;
    let action = rest.split_whitespace().next_back()?;
    // A line with counts only (no description) has no action name.
    (action.parse::<u64>().is_err()).then_some((irq, action))
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interrupts {
    /// CPU numbers of the count columns (offline CPUs have no column).
    pub cpus: Vec<u32>,
    pub lines: Vec<InterruptLine>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InterruptsError {
    #[error("/proc/interrupts has no CPU header line")]
    NoHeader,
    #[error("/proc/interrupts header: {0:?} is not a CPU column")]
    Header(String),
}

/// Parses the numbered lines; the named per-CPU counters (NMI, LOC, ...) are not device IRQs and
/// are skipped.
pub fn parse(text: &str) -> Result<Interrupts, InterruptsError> {
    let mut lines = text.lines();
    let header = lines.next().ok_or(InterruptsError::NoHeader)?;
    let cpus = header
        .split_whitespace()
        .map(|column| {
            column
                .strip_prefix("CPU")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| InterruptsError::Header(column.to_owned()))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    if cpus.is_empty() {
        return Err(InterruptsError::NoHeader);
    }
    let mut parsed = Vec::new();
    for line in lines {
        let Some((label, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = label.trim().parse::<u32>() else {
            continue;
        };
        let mut words = rest.split_whitespace().peekable();
        let mut counts = Vec::with_capacity(cpus.len());
        while counts.len() < cpus.len() {
            match words.peek().and_then(|w| w.parse::<u64>().ok()) {
                Some(count) => {
                    counts.push(count);
                    words.next();
                }
                None => break,
            }
        }
        let description = words.collect::<Vec<_>>().join(" ");
        parsed.push(InterruptLine {
            irq,
            counts,
            description,
        });
    }
    Ok(Interrupts {
        cpus,
        lines: parsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_lines_and_skips_counters() {
        let text = "           CPU0       CPU1       \n \
             24:          1          0  IO-APIC   5-edge      ACPI:Ged\n \
             36:          0   12378918 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0\n\
            NMI:          0          0   Non-maskable interrupts\n\
            ERR:          0\n";
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.cpus, vec![0, 1]);
        assert_eq!(parsed.lines.len(), 2);
        assert_eq!(parsed.lines[1].irq, 36);
        assert_eq!(parsed.lines[1].counts, vec![0, 12378918]);
        assert_eq!(parsed.lines[1].action(), "virtio1-req.0");
        assert_eq!(parse(""), Err(InterruptsError::NoHeader));
        assert_eq!(
            action_of_line(" 36:   0  12  PCI-MSIX-0000:00:02.0   1-edge   virtio1-req.0"),
            Some((36, "virtio1-req.0"))
        );
        assert_eq!(
            action_of_line("NMI:   0   0   Non-maskable interrupts"),
            None
        );
        assert_eq!(action_of_line(" 7:   0   0"), None);
    }
}
