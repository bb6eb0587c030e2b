//! A standard gRPC client against the real `fastvirt-csi`: Python's grpcio (C-core), with stubs
//! generated from the driver's own `csi.proto`, calls every service over the unix socket the way
//! Python CSI tools do, without overriding the authority. grpcio then sends the socket path
//! (percent-encoded) as `:authority`, which h2 alone resets with PROTOCOL_ERROR; the driver must
//! answer every call, big header blocks included, and refuse a gzip-compressed channel with a gRPC
//! status (UNIMPLEMENTED, as grpc-go does), not a stream reset.
//!
//! The client is `tests/python/csi_client.py`, run by the virtualenv's python that
//! `scripts/install-python-grpc.sh` prints (pinned grpcio, cached outside the checkout, about a
//! second when warm), or by `FASTVIRT_PYTHON_GRPC`. Without either this test fails;
//! `FASTVIRT_SKIP_PYTHON=1` skips it.

mod common;

use common::standard_clients::{assert_every_call_answered, call};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const SKIP_VAR: &str = "FASTVIRT_SKIP_PYTHON";
const PYTHON_VAR: &str = "FASTVIRT_PYTHON_GRPC";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The python with grpcio: `FASTVIRT_PYTHON_GRPC`, or the last line the install script prints.
fn grpc_python() -> PathBuf {
    if let Some(python) = std::env::var_os(PYTHON_VAR) {
        return PathBuf::from(python);
    }
    let script = manifest_dir().join("../scripts/install-python-grpc.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {}: {e}; set {PYTHON_VAR} to a python with grpcio and grpcio-tools, or {SKIP_VAR}=1 to skip",
                script.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} failed ({}): {stdout}\nPython's gRPC client is needed here: install python3 and pip \
         (Debian: python3-venv), set {PYTHON_VAR} to a python with grpcio and grpcio-tools, or set \
         {SKIP_VAR}=1 to skip this test",
        script.display(),
        output.status
    );
    let python = stdout
        .lines()
        .last()
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    assert!(
        Path::new(&python).is_file(),
        "{} printed no python path: {stdout}",
        script.display()
    );
    PathBuf::from(python)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

fn variant<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["variants"]
        .as_array()
        .and_then(|variants| variants.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no variant {name} in {summary:#}"))
}

/// Every call got its own status, and the answers say what this driver is.
fn assert_served(variant: &Value) {
    let label = variant["name"].as_str().unwrap_or_default();
    assert_eq!(variant["outcome"], "served", "{label}: {variant:#}");
    assert_every_call_answered(variant, label);
    let volume = &call(variant, "Controller.CreateVolume[block]")["response"]["volume"];
    assert_eq!(volume["capacityBytes"], (16 * MIB).to_string(), "{label}");
    assert!(
        call(variant, "Controller.GetCapacity")["response"]["availableCapacity"].is_string(),
        "{label}: GetCapacity reports capacity"
    );
}

#[tokio::test]
async fn python_grpcio_client_is_answered_by_every_service() {
    if std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1") {
        eprintln!("SKIP python_client: {SKIP_VAR}=1");
        return;
    }
    require_host!();
    let python = grpc_python();
    let env = TestEnv::start("python-client").await;
    let started = Instant::now();
    let output = Command::new(&python)
        .arg(manifest_dir().join("tests/python/csi_client.py"))
        .arg("--socket")
        .arg(&env.driver.args().socket)
        .arg("--proto")
        .arg(manifest_dir().join("proto/csi.proto"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "the client printed no JSON summary ({e}, exit {}):\n{stdout}\n{stderr}\ndriver log:\n{}",
            output.status,
            env.log()
        )
    });
    let outcomes: Vec<String> = summary["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| format!("{}: {}", text(&v["name"]), text(&v["outcome"])))
        .collect();
    eprintln!(
        "grpcio {} (python {}) against {}: {} in {:.1?}",
        text(&summary["grpcio"]),
        text(&summary["python"]),
        text(&summary["target"]),
        outcomes.join(", "),
        started.elapsed()
    );
    assert!(
        output.status.success() && summary["ok"] == true,
        "unexpected statuses: {:#}\n{stderr}\ndriver log:\n{}",
        summary["unexpected"],
        env.log()
    );

    assert_served(variant(&summary, "plain"));
    // ~12 KiB of metadata on every call: big header blocks, HPACK's dynamic table in use.
    let large = variant(&summary, "large-metadata");
    assert!(large["metadata_bytes"].as_u64() > Some(10_000), "{large:#}");
    assert_served(large);

    // fastvirt-csi takes no compressed messages: a gzip channel is refused with UNIMPLEMENTED and
    // its reason on every call, as the gRPC compression spec asks (and grpc-go does), never reset.
    let gzip = variant(&summary, "gzip");
    assert_eq!(gzip["outcome"], "refused", "{gzip:#}");
    for call in gzip["calls"].as_array().into_iter().flatten() {
        if call["code"].is_null() {
            continue; // depends on a volume the refused CreateVolume did not make
        }
        assert_eq!(call["code"], "UNIMPLEMENTED", "{call:#}");
        assert!(
            call["details"]
                .as_str()
                .is_some_and(|d| d.contains("compressed with `gzip`")),
            "{call:#}"
        );
    }

    // More metadata than the 16 KiB header list the server advertises: h2 answers HTTP 431 (RFC
    // 9113 §10.5.1), which grpcio reports as UNKNOWN; the connection stays usable.
    let oversized = &summary["oversized_metadata"];
    assert_eq!(oversized["call"]["code"], "UNKNOWN", "{oversized:#}");
    assert!(
        text(&oversized["call"]["details"]).contains("431"),
        "{oversized:#}"
    );
    assert_eq!(oversized["follow_up"]["code"], "OK", "{oversized:#}");

    // The client deleted what it created: no volume, snapshot or file is left in the pool.
    assert_eq!(pool_files(&env.pool_dir), Vec::<String>::new());
}
