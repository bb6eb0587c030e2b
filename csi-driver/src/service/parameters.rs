//! StorageClass parameters: the few the driver takes, validated once for CreateVolume,
//! GetCapacity and ValidateVolumeCapabilities alike.

use super::Driver;
use crate::backend::VolumeLayout;
use crate::filesystem::FsType;
use crate::ids::PoolName;
use crate::qos::{LimitKind, QosChange, QosLimits};
use std::collections::HashMap;
use tonic::Status;

/// StorageClass parameter that picks the pool.
pub const PARAM_POOL: &str = "pool";
/// StorageClass parameter that makes volumes sparse instead of preallocated.
pub const PARAM_THIN: &str = "thin";
/// StorageClass parameter (and volume context key): the filesystem of a mount volume whose
/// capability names none. Kubernetes always names one; other CSI clients may not.
pub const PARAM_FS_TYPE: &str = "fsType";
/// Parameters Kubernetes sidecars add on their own; they carry no meaning for the driver.
pub const SIDECAR_PARAM_PREFIX: &str = "csi.storage.k8s.io/";

/// Validated StorageClass parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeParameters {
    pub pool: PoolName,
    pub thin: bool,
    /// The filesystem for mount capabilities that name none.
    pub fs_type: Option<FsType>,
    /// I/O limits the StorageClass gives every volume (a VolumeAttributesClass may change them).
    pub qos: QosLimits,
    pub layout: VolumeLayout,
}

/// Parses StorageClass parameters; unknown keys are refused so a typo never goes unnoticed.
pub fn parse_parameters(
    driver: &Driver,
    parameters: &HashMap<String, String>,
) -> Result<VolumeParameters, Status> {
    let mut pool = None;
    let mut thin = false;
    let mut fs_type = None;
    let mut qos = QosChange::default();
    let mut layout = VolumeLayout::Device;
    for (key, value) in parameters {
        match key.as_str() {
            PARAM_POOL => {
                pool = Some(
                    PoolName::new(value)
                        .map_err(|e| Status::invalid_argument(format!("parameter pool: {e}")))?,
                )
            }
            PARAM_THIN => {
                thin = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "parameter thin must be \"true\" or \"false\", got {:?}",
                            crate::ids::truncate_for_message(other)
                        )));
                    }
                }
            }
            fastvirt_api::volume_layout::PARAMETER => {
                layout = VolumeLayout::parse(value).map_err(Status::invalid_argument)?;
            }
            key if key.starts_with(SIDECAR_PARAM_PREFIX) => {}
            key if LimitKind::from_parameter(key).is_some() => {
                qos.take(key, value).map_err(Status::invalid_argument)?;
            }
            // Also the legacy StorageClass key, which external-provisioner passes through (the
            // capability then carries the same value).
            key if key.eq_ignore_ascii_case(PARAM_FS_TYPE) => {
                // Two spellings of it (`fsType`, `fstype`) would leave the choice to the map's
                // iteration order.
                if fs_type.is_some() {
                    return Err(Status::invalid_argument(format!(
                        "parameter {PARAM_FS_TYPE} is given more than once, in different cases"
                    )));
                }
                fs_type = Some(FsType::parse(value).map_err(|e| {
                    Status::invalid_argument(format!("parameter {PARAM_FS_TYPE}: {e}"))
                })?);
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown parameter {:?}; supported: pool, thin, fsType, layout, {}",
                    crate::ids::truncate_for_message(other),
                    crate::qos::limits::parameter_list()
                )));
            }
        }
    }
    let pool = match pool {
        Some(pool) => pool,
        None if driver.has_no_pools() => {
            return Err(Status::failed_precondition(
                "this node has no pools: no BlockPool selects it yet",
            ));
        }
        None => driver.default_pool().ok_or_else(|| {
            Status::invalid_argument(
                "parameter pool is required: this node has several pools and none is named default",
            )
        })?,
    };
    Ok(VolumeParameters {
        pool,
        thin,
        fs_type,
        qos: qos.applied_to(QosLimits::default()),
        layout,
    })
}

/// The limits of a new volume: the StorageClass's, then the VolumeAttributesClass's
/// (`mutable_parameters`) over them. Only limits are mutable; any other key is INVALID_ARGUMENT.
pub fn creation_limits(
    storage_class: QosLimits,
    mutable_parameters: &HashMap<String, String>,
) -> Result<QosLimits, Status> {
    Ok(mutable_change(mutable_parameters)?.applied_to(storage_class))
}

/// The limits a VolumeAttributesClass or ControllerModifyVolume names. Keys external-resizer adds
/// with `--extra-modify-metadata` (`csi.storage.k8s.io/...`) are ignored.
pub fn mutable_change(mutable_parameters: &HashMap<String, String>) -> Result<QosChange, Status> {
    QosChange::parse(mutable_parameters, |key| {
        key.starts_with(SIDECAR_PARAM_PREFIX)
    })
    .map_err(Status::invalid_argument)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Mode};
    use crate::pool_set::PoolSet;

    fn driver_without_pools() -> Driver {
        let config = Cli {
            node_id: Some("n1".into()),
            mode: Some(Mode::Controller),
            ..Cli::default()
        }
        .resolve()
        .unwrap();
        Driver::new(&config, PoolSet::new(Box::new(|_| Err("unused".into()))))
    }

    #[test]
    fn fs_type_in_two_spellings_is_refused_whatever_the_order() {
        // Found by the `storage_class_parameters` fuzz target: with `fsType: xfs` and `fstype: ""`
        // the volume got xfs or ext4 depending on the map's iteration order.
        let driver = driver_without_pools();
        for _ in 0..32 {
            let parameters = HashMap::from([
                ("pool".to_owned(), "fast".to_owned()),
                ("fsType".to_owned(), "xfs".to_owned()),
                ("fstype".to_owned(), String::new()),
            ]);
            let status = parse_parameters(&driver, &parameters).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(
                status.message().contains("more than once"),
                "{}",
                status.message()
            );
        }
        let one = HashMap::from([
            ("pool".to_owned(), "fast".to_owned()),
            ("FSTYPE".to_owned(), "xfs".to_owned()),
        ]);
        assert_eq!(
            parse_parameters(&driver, &one).unwrap().fs_type,
            Some(FsType::Xfs)
        );
    }

    #[test]
    fn io_limits_in_the_storage_class_and_the_attributes_class() {
        let driver = driver_without_pools();
        let class = HashMap::from([
            ("pool".to_owned(), "fast".to_owned()),
            ("readIOPS".to_owned(), "400".to_owned()),
            ("writeBPS".to_owned(), "1048576".to_owned()),
        ]);
        let params = parse_parameters(&driver, &class).unwrap();
        assert_eq!(params.qos.read_iops, Some(400));
        assert_eq!(params.qos.write_bps, Some(1 << 20));
        // The VolumeAttributesClass goes over the StorageClass, key by key.
        let attributes = HashMap::from([
            ("readIOPS".to_owned(), "200".to_owned()),
            ("writeBPS".to_owned(), "unlimited".to_owned()),
        ]);
        let limits = creation_limits(params.qos, &attributes).unwrap();
        assert_eq!(limits.read_iops, Some(200));
        assert_eq!(limits.write_bps, None);
        // Bad values and unknown mutable keys are INVALID_ARGUMENT.
        for (key, value) in [("readIOPS", "0"), ("writeIOPS", "fast")] {
            let bad = HashMap::from([
                ("pool".to_owned(), "fast".to_owned()),
                (key.to_owned(), value.to_owned()),
            ]);
            let status = parse_parameters(&driver, &bad).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{key}={value}");
        }
        let unknown = HashMap::from([("pool".to_owned(), "fast".to_owned())]);
        let status = creation_limits(QosLimits::default(), &unknown).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
