//! A standard gRPC client against the real `fastvirt-csi`: grpc-java (Netty with its epoll unix
//! sockets), the channel built from a `unix://` target with the authority left to grpc-java,
//! which then sends the socket path itself as `:authority`. Every service must answer.
//!
//! The client is the Maven project `tests/java` (messages from the driver's own `csi.proto`,
//! built into `target/java-client`, dependencies cached in `~/.m2`: about 1.5 minutes cold, a few
//! seconds warm). Without `mvn` and `java` this test fails; `FASTVIRT_SKIP_JAVA=1` skips it.

mod common;

use common::standard_clients::assert_every_call_answered;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const SKIP_VAR: &str = "FASTVIRT_SKIP_JAVA";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

/// Builds the client with Maven; returns its classpath.
fn build_client() -> String {
    let project = manifest_dir().join("tests/java");
    let output = Command::new("mvn")
        .args(["-q", "-B", "-Dstyle.color=never", "-f"])
        .arg(project.join("pom.xml"))
        .arg("process-classes")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running mvn: {e}; the Java client needs Maven and a JDK 17+ (Debian: maven, \
                 default-jdk-headless), or set {SKIP_VAR}=1 to skip this test"
            )
        });
    assert!(
        output.status.success(),
        "mvn -f {} process-classes failed ({}); set {SKIP_VAR}=1 to skip this test\n{}\n{}",
        project.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let build = manifest_dir().join("../target/java-client");
    let dependencies = std::fs::read_to_string(build.join("classpath.txt"))
        .unwrap_or_else(|e| panic!("{}/classpath.txt: {e}", build.display()));
    format!(
        "{}:{}",
        build.join("classes").display(),
        dependencies.trim()
    )
}

#[tokio::test]
async fn grpc_java_client_is_answered_by_every_service() {
    if std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1") {
        eprintln!("SKIP java_client: {SKIP_VAR}=1");
        return;
    }
    require_host!();
    let built = Instant::now();
    let classpath = build_client();
    eprintln!("java client built in {:.1?}", built.elapsed());
    let env = TestEnv::start("java-client").await;
    let socket: PathBuf = env.driver.args().socket.clone();
    let started = Instant::now();
    let output = Command::new("java")
        .arg("-cp")
        .arg(&classpath)
        .arg("io.fastvirt.csitest.CsiClient")
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running java: {e}; set {SKIP_VAR}=1 to skip this test"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "the client printed no JSON summary ({e}, exit {}):\n{stdout}\n{stderr}\ndriver log:\n{}",
            output.status,
            env.log()
        )
    });
    eprintln!(
        "grpc-java {} (java {}) against {}, :authority {}: {} calls in {:.1?}",
        text(&summary["grpc_java"]),
        text(&summary["java"]),
        text(&summary["target"]),
        text(&summary["authority"]),
        summary["calls"].as_array().map_or(0, Vec::len),
        started.elapsed()
    );
    assert!(
        output.status.success() && summary["ok"] == true,
        "unexpected statuses: {:#}\n{stderr}\ndriver log:\n{}",
        summary["unexpected"],
        env.log()
    );
    // The point of this test: grpc-java names the socket path as the authority, which is no URI
    // authority, and is answered all the same.
    assert_eq!(
        summary["authority"],
        socket.display().to_string(),
        "{summary:#}"
    );
    assert_every_call_answered(&summary, "grpc-java");
    // The client deleted what it created.
    assert_eq!(pool_files(&env.pool_dir), Vec::<String>::new());
}
