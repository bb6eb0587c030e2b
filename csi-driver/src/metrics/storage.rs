//! Pools and volumes, read when Prometheus scrapes: each pool's space (usable, free, available to
//! a new volume, reserved, promised), its volume count and health, and for each volume attached
//! on this node its I/O from the block layer's counters, labelled with the PersistentVolume name
//! (the CSI name external-provisioner gives a volume). Nothing is cached: a scrape shows the pool
//! file's pools as they are now.

use super::blockstat::{self, BlockStat};
use crate::pool_set::PoolSet;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    pool: String,
    volume_id: String,
    persistentvolume: String,
}

/// What one scrape found.
#[derive(Debug, Default)]
struct Reading {
    pools: Vec<(PoolLabels, PoolFigures)>,
    volumes: Vec<(VolumeLabels, u64, Option<BlockStat>)>,
}

#[derive(Debug, Default)]
struct PoolFigures {
    healthy: bool,
    usage: Option<crate::backend::PoolUsage>,
    volumes: Option<u64>,
}

/// The collector registered with the plugin's registry.
#[derive(Debug)]
pub struct StorageCollector {
    pools: Arc<PoolSet>,
    sys_block: PathBuf,
}

impl StorageCollector {
    pub fn new(pools: Arc<PoolSet>, sys_block: PathBuf) -> Self {
        Self { pools, sys_block }
    }

    fn read(&self) -> Reading {
        let mut reading = Reading::default();
        let served = self.pools.served();
        for health in self.pools.health() {
            let pool = health.name.to_string();
            let backend = served
                .iter()
                .find(|(name, _)| *name == health.name)
                .map(|(_, b)| b);
            let mut figures = PoolFigures {
                healthy: health.problem.is_none(),
                ..PoolFigures::default()
            };
            if let Some(backend) = backend {
                figures.usage = backend.usage().ok();
                if let Ok(volumes) = backend.list() {
                    figures.volumes = Some(volumes.len() as u64);
                    let devices = backend.attached_devices(&volumes);
                    for volume in volumes {
                        let stat = devices
                            .get(&volume.id)
                            .and_then(|device| blockstat::read(&self.sys_block, &device.path));
                        reading.volumes.push((
                            VolumeLabels {
                                pool: pool.clone(),
                                volume_id: volume.id.clone(),
                                persistentvolume: volume.name.clone(),
                            },
                            volume.capacity_bytes,
                            stat,
                        ));
                    }
                }
            }
            reading.pools.push((PoolLabels { pool }, figures));
        }
        reading
    }
}

pub(super) fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (L, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

pub(super) fn bytes(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for StorageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reading = self.read();
        let pools = &reading.pools;
        gauges(
            &mut encoder,
            "pool_healthy",
            "1 when the pool is served and writable",
            pools.iter().map(|(l, f)| (l.clone(), i64::from(f.healthy))),
        )?;
        let usage = |pick: fn(&crate::backend::PoolUsage) -> u64| {
            pools
                .iter()
                .filter_map(move |(l, f)| f.usage.as_ref().map(|u| (l.clone(), bytes(pick(u)))))
        };
        gauges(
            &mut encoder,
            "pool_capacity_bytes",
            "The pool filesystem's size less the reserve",
            usage(|u| u.total_bytes),
        )?;
        gauges(
            &mut encoder,
            "pool_free_bytes",
            "Free space in the pool less the reserve",
            usage(|u| u.free_bytes),
        )?;
        gauges(
            &mut encoder,
            "pool_available_bytes",
            "What a new volume can get: free space within the overcommit cap",
            usage(|u| u.available_bytes),
        )?;
        gauges(
            &mut encoder,
            "pool_reserved_bytes",
            "What the driver keeps back of the pool's filesystem",
            usage(|u| u.reserved_bytes),
        )?;
        gauges(
            &mut encoder,
            "pool_promised_bytes",
            "Every volume's capacity and every snapshot's size in the pool",
            usage(|u| u.promised_bytes),
        )?;
        gauges(
            &mut encoder,
            "pool_volumes",
            "Volumes in the pool",
            pools
                .iter()
                .filter_map(|(l, f)| f.volumes.map(|n| (l.clone(), bytes(n)))),
        )?;
        let volumes = &reading.volumes;
        gauges(
            &mut encoder,
            "volume_capacity_bytes",
            "Each volume's capacity",
            volumes
                .iter()
                .map(|(l, capacity, _)| (l.clone(), bytes(*capacity))),
        )?;
        let io = |pick: fn(&BlockStat) -> f64| {
            volumes
                .iter()
                .filter_map(move |(l, _, stat)| stat.as_ref().map(|s| (l.clone(), pick(s))))
        };
        counters(
            &mut encoder,
            "volume_read_ops",
            "Reads completed on the volume's device since it was attached",
            io(|s| s.read_ios as f64),
        )?;
        counters(
            &mut encoder,
            "volume_write_ops",
            "Writes completed on the volume's device since it was attached",
            io(|s| s.write_ios as f64),
        )?;
        counters(
            &mut encoder,
            "volume_read_bytes",
            "Bytes read from the volume's device since it was attached",
            io(|s| s.read_bytes as f64),
        )?;
        counters(
            &mut encoder,
            "volume_written_bytes",
            "Bytes written to the volume's device since it was attached",
            io(|s| s.write_bytes as f64),
        )?;
        counters(
            &mut encoder,
            "volume_read_seconds",
            "Time the volume's device spent on reads",
            io(|s| s.read_ms as f64 / 1000.0),
        )?;
        counters(
            &mut encoder,
            "volume_write_seconds",
            "Time the volume's device spent on writes",
            io(|s| s.write_ms as f64 / 1000.0),
        )?;
        Ok(())
    }
}
