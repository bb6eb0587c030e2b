//! The I/O limits the node's enforcer keeps in force: each limited volume's limits, and how many
//! pod cgroups carry them (0 while no pod uses the volume).

use super::storage::{bytes, gauges};
use crate::qos::QosEnforcer;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    pool: String,
    volume_id: String,
    persistentvolume: String,
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    pool: String,
    volume_id: String,
    persistentvolume: String,
}

#[derive(Debug)]
pub struct QosCollector {
    enforcer: Arc<QosEnforcer>,
}

impl QosCollector {
    pub fn new(enforcer: Arc<QosEnforcer>) -> Self {
        Self { enforcer }
    }
}

impl Collector for QosCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let in_force = self.enforcer.in_force();
        gauges(
            &mut encoder,
            "volume_qos_limit",
            "An I/O limit of an attached volume (limit: read_iops, write_iops, read_bps, write_bps), per second",
            in_force.iter().flat_map(|volume| {
                volume.limits.set_limits().map(|(kind, value)| {
                    (
                        LimitLabels {
                            pool: volume.pool.clone(),
                            volume_id: volume.volume_id.clone(),
                            persistentvolume: volume.persistent_volume.clone(),
                            limit: kind.label(),
                        },
                        bytes(value),
                    )
                })
            }),
        )?;
        gauges(
            &mut encoder,
            "volume_qos_cgroups",
            "Pod cgroups whose throttle files carry the volume's limits",
            in_force.iter().map(|volume| {
                (
                    VolumeLabels {
                        pool: volume.pool.clone(),
                        volume_id: volume.volume_id.clone(),
                        persistentvolume: volume.persistent_volume.clone(),
                    },
                    bytes(volume.cgroups as u64),
                )
            }),
        )
    }
}
