//! Order statistics for benchmark samples.

/// The median; the mean of the two middle values for an even count. `None` for no samples.
pub fn median(samples: &[f64]) -> Option<f64> {
    percentile(samples, 50.0)
}

/// The `p`-th percentile by linear interpolation between closest ranks.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64))
}

/// Runs `measure(is_volume)` `rounds` times for both sides of an A/B comparison, alternating
/// which goes first so that neither always runs on a warmer machine; the volume's samples first.
pub fn interleaved<T, E>(
    rounds: u32,
    mut measure: impl FnMut(bool) -> Result<T, E>,
) -> Result<(Vec<T>, Vec<T>), E> {
    let (mut on_volume, mut on_raw) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_volume in order {
            let sample = measure(is_volume)?;
            if is_volume {
                on_volume.push(sample);
            } else {
                on_raw.push(sample);
            }
        }
    }
    Ok((on_volume, on_raw))
}

/// Runs `measure(side)` `rounds` times for each of `sides` sides, starting each round one side
/// later than the last, so that no side always runs first or last; the samples by side.
pub fn rotated<T, E>(
    rounds: u32,
    sides: usize,
    mut measure: impl FnMut(usize) -> Result<T, E>,
) -> Result<Vec<Vec<T>>, E> {
    let mut samples: Vec<Vec<T>> = (0..sides).map(|_| Vec::new()).collect();
    for round in 0..rounds as usize {
        for step in 0..sides {
            let side = (round + step) % sides;
            samples[side].push(measure(side)?);
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_rounds_start_with_each_side_in_turn() {
        let mut order = Vec::new();
        let samples = rotated(3, 3, |side| {
            order.push(side);
            Ok::<_, ()>(side * 10)
        })
        .unwrap();
        assert_eq!(order, [0, 1, 2, 1, 2, 0, 2, 0, 1]);
        assert_eq!(samples, [vec![0; 3], vec![10; 3], vec![20; 3]]);
    }

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let hundred: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), Some(100.0));
        assert_eq!(percentile(&hundred, 0.0), Some(1.0));
        assert_eq!(percentile(&[5.0], 99.0), Some(5.0));
        assert_eq!(percentile(&[1.0], 101.0), None);
    }
}
