//! Per-volume I/O limits (`readIOPS`, `writeIOPS`, `readBPS`, `writeBPS`): set at CreateVolume
//! from the StorageClass or the VolumeAttributesClass, changed by ControllerModifyVolume, kept in
//! the volume's record, and enforced on the node in the cgroups of the pods that use the volume
//! (blkio throttling on cgroup v1, `io.max` on v2), on the volume's loop device. A filesystem
//! volume's I/O reaches the same device, so one rule covers both access types.

pub mod cgroup;
pub mod consumers;
pub mod enforcer;
pub mod forward;
pub mod intent;
pub mod pv_watch;

pub use enforcer::{InForce, QosEnforcer, QosPaths};
/// The limits themselves, shared with the operator.
pub use fastvirt_api::volume_qos as limits;
pub use limits::{LimitKind, QosChange, QosLimits};
