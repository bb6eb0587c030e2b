//! fastvirt node agent: applies, verifies, previews and restores KVM-host tuning and measures CPU
//! congestion.

pub mod rbac;
