//! Parsing the mount flags of a CSI `MountVolume` capability into mount(2) flags and filesystem data.

use nix::mount::MsFlags;

/// Mount flags split into what the kernel takes as flags and what goes to the filesystem as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Filesystem-specific options, comma-separated, as mount(2) expects them.
    pub data: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MountOptionError {
    #[error(
        "mount option {0:?} is not allowed: the driver decides how volumes are bound and remounted"
    )]
    Forbidden(String),
    #[error(
        "mount option {0:?} has characters outside printable ASCII or is longer than 256 bytes"
    )]
    Malformed(String),
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            flags: MsFlags::empty(),
            data: Vec::new(),
        }
    }
}

impl MountOptions {
    /// Parses entries like `["noatime", "discard,nobarrier"]`.
    pub fn parse<S: AsRef<str>>(mount_flags: &[S]) -> Result<Self, MountOptionError> {
        let mut options = Self::default();
        for option in mount_flags
            .iter()
            .flat_map(|entry| entry.as_ref().split(','))
        {
            let option = option.trim();
            if option.is_empty() {
                continue;
            }
            if option.len() > 256 || !option.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(MountOptionError::Malformed(
                    crate::ids::truncate_for_message(option),
                ));
            }
            match kernel_flag(option) {
                Some(FlagEffect::Set(flag)) => options.flags |= flag,
                Some(FlagEffect::Clear(flag)) => options.flags &= !flag,
                Some(FlagEffect::Forbidden) => {
                    return Err(MountOptionError::Forbidden(option.to_owned()));
                }
                None => {
                    if !options.data.iter().any(|existing| existing == option) {
                        options.data.push(option.to_owned())
                    }
                }
            }
        }
        Ok(options)
    }

    pub fn read_only(&self) -> bool {
        self.flags.contains(MsFlags::MS_RDONLY)
    }

    /// The data argument for mount(2), `None` when there is none.
    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

enum FlagEffect {
    Set(MsFlags),
    Clear(MsFlags),
    Forbidden,
}

fn kernel_flag(option: &str) -> Option<FlagEffect> {
    use FlagEffect::*;
    Some(match option {
        "ro" => Set(MsFlags::MS_RDONLY),
        "rw" => Clear(MsFlags::MS_RDONLY),
        "nosuid" => Set(MsFlags::MS_NOSUID),
        "suid" => Clear(MsFlags::MS_NOSUID),
        "nodev" => Set(MsFlags::MS_NODEV),
        "dev" => Clear(MsFlags::MS_NODEV),
        "noexec" => Set(MsFlags::MS_NOEXEC),
        "exec" => Clear(MsFlags::MS_NOEXEC),
        "sync" => Set(MsFlags::MS_SYNCHRONOUS),
        "async" => Clear(MsFlags::MS_SYNCHRONOUS),
        "dirsync" => Set(MsFlags::MS_DIRSYNC),
        "noatime" => Set(MsFlags::MS_NOATIME),
        "atime" => Clear(MsFlags::MS_NOATIME),
        "nodiratime" => Set(MsFlags::MS_NODIRATIME),
        "diratime" => Clear(MsFlags::MS_NODIRATIME),
        "relatime" => Set(MsFlags::MS_RELATIME),
        "norelatime" => Clear(MsFlags::MS_RELATIME),
        "strictatime" => Set(MsFlags::MS_STRICTATIME),
        "lazytime" => Set(MsFlags::MS_LAZYTIME),
        "nolazytime" => Clear(MsFlags::MS_LAZYTIME),
        "defaults" => Clear(MsFlags::empty()),
        "bind" | "rbind" | "remount" | "move" | "shared" | "rshared" | "slave" | "rslave"
        | "private" | "rprivate" | "unbindable" | "runbindable" => Forbidden,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_kernel_flags_from_filesystem_data() {
        let parsed = MountOptions::parse(&["noatime", "discard,nobarrier", " nodev "]).unwrap();
        assert_eq!(parsed.flags, MsFlags::MS_NOATIME | MsFlags::MS_NODEV);
        assert_eq!(parsed.data_string().as_deref(), Some("discard,nobarrier"));
        assert!(!parsed.read_only());
    }

    #[test]
    fn later_options_win_and_duplicates_fold() {
        let parsed = MountOptions::parse(&["ro", "rw", "discard", "discard", "", ","]).unwrap();
        assert!(!parsed.read_only());
        assert_eq!(parsed.data, vec!["discard".to_owned()]);
        assert!(MountOptions::parse(&["rw,ro"]).unwrap().read_only());
        assert_eq!(
            MountOptions::parse::<&str>(&[]).unwrap(),
            MountOptions::default()
        );
    }

    #[test]
    fn refuses_propagation_bind_and_odd_bytes() {
        assert_eq!(
            MountOptions::parse(&["bind"]),
            Err(MountOptionError::Forbidden("bind".into()))
        );
        assert_eq!(
            MountOptions::parse(&["a,remount"]),
            Err(MountOptionError::Forbidden("remount".into()))
        );
        assert!(matches!(
            MountOptions::parse(&["a b"]),
            Err(MountOptionError::Malformed(_))
        ));
        assert!(matches!(
            MountOptions::parse(&["x\0"]),
            Err(MountOptionError::Malformed(_))
        ));
        assert!(matches!(
            MountOptions::parse(&["x".repeat(300)]),
            Err(MountOptionError::Malformed(_))
        ));
    }
}
