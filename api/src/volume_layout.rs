//! How a volume lies in its pool: the StorageClass parameter `layout`, shared by the driver (which
//! honours it) and the operator (which sets it from a BlockPool).

use serde::{Deserialize, Serialize};

/// The StorageClass parameter.
pub const PARAMETER: &str = "layout";

/// The file in a `disk-image` volume's directory that holds the VM's disk.
pub const DISK_IMAGE_FILE: &str = "disk.img";

/// How a volume lies in its pool.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeLayout {
    /// A file attached as a loop device: a raw block volume, or a filesystem made on the device.
    #[default]
    Device,
    /// A directory on the pool's own filesystem holding one preallocated `disk.img`, for
    /// KubeVirt's Filesystem volumes: QEMU opens the image directly, with no loop device and no
    /// second filesystem in between. Filesystem volumes only.
    DiskImage,
}

impl VolumeLayout {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "device" => Ok(Self::Device),
            "disk-image" => Ok(Self::DiskImage),
            other => Err(format!(
                "parameter {PARAMETER} must be \"device\" or \"disk-image\", got {:?}",
                crate::text::truncate_for_message(other)
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::DiskImage => "disk-image",
        }
    }

    pub fn is_device(&self) -> bool {
        *self == Self::Device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints_and_refuses_the_rest() {
        for layout in [VolumeLayout::Device, VolumeLayout::DiskImage] {
            assert_eq!(VolumeLayout::parse(layout.as_str()), Ok(layout));
            assert_eq!(
                serde_json::to_string(&layout).unwrap(),
                format!("\"{}\"", layout.as_str())
            );
        }
        for bad in ["", "Device", "diskImage", "disk_image", "file"] {
            let error = VolumeLayout::parse(bad).unwrap_err();
            assert!(error.contains("\"device\" or \"disk-image\""), "{error}");
        }
    }
}
