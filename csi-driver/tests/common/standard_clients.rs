//! What the tests with other languages' gRPC clients expect: one list of calls for every client,
//! and one check of their JSON summaries (`{"calls": [{"call", "code", "details", "response"}]}`).

use serde_json::Value;

/// Every call a client makes, with the status it must end with.
pub const CALLS: &[(&str, &str)] = &[
    ("Identity.GetPluginInfo", "OK"),
    ("Identity.GetPluginCapabilities", "OK"),
    ("Identity.Probe", "OK"),
    ("Controller.ControllerGetCapabilities", "OK"),
    ("Controller.CreateVolume[block]", "OK"),
    ("Controller.CreateVolume[filesystem]", "OK"),
    ("Controller.ListVolumes", "OK"),
    ("Controller.GetCapacity", "OK"),
    ("Controller.CreateSnapshot", "OK"),
    ("Controller.DeleteSnapshot", "OK"),
    ("Controller.DeleteVolume[block]", "OK"),
    ("Controller.DeleteVolume[filesystem]", "OK"),
    ("Node.NodeGetInfo", "OK"),
    ("Node.NodeGetCapabilities", "OK"),
    ("Controller.CreateVolume[no name]", "INVALID_ARGUMENT"),
];

/// The call `name` in a summary.
pub fn call<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["calls"]
        .as_array()
        .and_then(|calls| calls.iter().find(|c| c["call"] == name))
        .unwrap_or_else(|| panic!("no call {name} in {summary:#}"))
}

/// Every call got its own status, and the answers say what this driver is.
pub fn assert_every_call_answered(summary: &Value, label: &str) {
    for (name, code) in CALLS {
        let call = call(summary, name);
        assert_eq!(call["code"], *code, "{label}: {name}: {}", call["details"]);
    }
    let info = &call(summary, "Identity.GetPluginInfo")["response"];
    assert_eq!(info["name"], fastvirt_csi::DRIVER_NAME, "{label}");
    assert_eq!(info["vendorVersion"], fastvirt_csi::VERSION, "{label}");
    assert_eq!(
        call(summary, "Node.NodeGetInfo")["response"]["nodeId"],
        super::NODE,
        "{label}"
    );
    assert_eq!(
        call(summary, "Controller.CreateVolume[no name]")["details"],
        "name is required",
        "{label}"
    );
}
