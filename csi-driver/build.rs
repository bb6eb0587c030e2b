//! Compiles the protocols with protox (pure Rust), so a fresh clone builds with cargo alone:
//! `proto/csi.proto` (CSI v1.12.0) and `proto/pluginregistration.proto` (kubelet's plugin
//! registration, for the built-in registrar).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    println!("cargo:rerun-if-changed=proto/pluginregistration.proto");
    let descriptors = protox::compile(["csi.proto", "pluginregistration.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}
