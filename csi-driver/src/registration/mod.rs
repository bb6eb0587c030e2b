//! The built-in kubelet registrar and health endpoint: what the node-driver-registrar and
//! livenessprobe sidecars do, served by the plugin itself when `--kubelet-registration-path` and
//! `--health-port` are set. Two fewer containers per node, and registration cannot outlive the
//! plugin: the registration socket exists exactly while the CSI socket is served.

mod health;
mod kubelet;

pub use health::serve_health;
pub use kubelet::{Registrar, registration_socket, serve_registration};
