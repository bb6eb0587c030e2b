//! The kernel interfaces that no maintained crate wraps: the only `unsafe` code in fastvirt.
//!
//! Each submodule declares a few ioctls or system calls with `#[repr(C)]` structs that match the
//! kernel's headers, and checks their sizes at compile time. Every call passes either no argument or
//! a pointer to a fully initialised struct that outlives the call; that is the whole safety argument.
#![allow(unsafe_code)]

pub mod loop_dev;
pub mod project_quota;
