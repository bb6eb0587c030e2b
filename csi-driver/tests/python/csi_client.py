#!/usr/bin/env python3
"""Calls every CSI service of a fastvirt-csi socket with Python's gRPC client (grpcio, C-core).

The channel is `grpc.insecure_channel("unix://<socket>")` with the authority left alone: grpcio
then sends what it derives from the target (the socket path, percent-encoded), as it does in
Python CSI tools. The calls run once per channel variant:

  plain           no options
  large-metadata  every call carries ~12 KiB of metadata (below the 16 KiB header list the
                  server advertises), so header blocks are big and HPACK's dynamic table is used
  gzip            grpc.default_compression_algorithm = gzip: the server must answer, or refuse
                  with a gRPC status (UNIMPLEMENTED, as the gRPC compression spec says and
                  grpc-go does), never reset the stream

and then one call with 20 KiB of metadata, beyond that header list limit, whose status is
recorded, followed by a call on the same channel that must be served.

Prints one JSON document on stdout and exits 1 when any call ends with a status it should not.
Stubs are generated from the driver's own csi.proto into a temporary directory.

usage: csi_client.py --socket PATH --proto PATH/csi.proto [--pool NAME]
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import time

import grpc
from google.protobuf import json_format

MIB = 1 << 20
TIMEOUT = 30.0
# What a compression refusal must look like (tonic's wording, as the spec asks for).
GZIP_REFUSAL = "compressed with `gzip`"


def generate_stubs(proto, out_dir):
    """csi_pb2 and csi_pb2_grpc from `proto`, compiled with grpc_tools' protoc."""
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    proto_dir = os.path.dirname(os.path.abspath(proto))
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.abspath(proto),
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed with {status} on {proto}")
    sys.path.insert(0, out_dir)
    module = os.path.splitext(os.path.basename(proto))[0]
    return importlib.import_module(f"{module}_pb2"), importlib.import_module(f"{module}_pb2_grpc")


class Variant:
    """One channel configuration and the outcomes it allows."""

    def __init__(self, name, options, metadata, allowed):
        self.name = name
        self.options = options
        self.metadata = metadata
        # Statuses every call may end with besides its own expected one.
        self.allowed = allowed


def variants():
    padding = [(f"x-fastvirt-padding-{i}", chr(ord("a") + i) * 4000) for i in range(3)]
    return [
        Variant("plain", [], [], set()),
        Variant(
            "large-metadata",
            [("grpc.max_metadata_size", 64 * 1024)],
            padding,
            set(),
        ),
        Variant(
            "gzip",
            [("grpc.default_compression_algorithm", int(grpc.Compression.Gzip))],
            [],
            {"UNIMPLEMENTED"},
        ),
    ]


class Runner:
    def __init__(self, pb, pb_grpc, channel, variant, pool):
        self.pb = pb
        self.variant = variant
        self.pool = pool
        self.identity = pb_grpc.IdentityStub(channel)
        self.controller = pb_grpc.ControllerStub(channel)
        self.node = pb_grpc.NodeStub(channel)
        self.calls = []

    def call(self, name, method, request, expect="OK"):
        """Calls `method`, records the outcome, returns the response or None."""
        started = time.monotonic()
        record = {"call": name, "expected": expect}
        response = None
        try:
            response = method(
                request, timeout=TIMEOUT, metadata=self.variant.metadata
            )
            record["code"] = "OK"
            record["response"] = json_format.MessageToDict(response)
        except grpc.RpcError as error:
            record["code"] = error.code().name
            record["details"] = error.details()
        record["ms"] = round((time.monotonic() - started) * 1000, 1)
        record["ok"] = self.judge(record)
        self.calls.append(record)
        return response

    def judge(self, record):
        code = record["code"]
        if code == record["expected"]:
            return True
        if code not in self.variant.allowed:
            return False
        # A compression refusal is a proper one only with its reason. (The grpc-accept-encoding
        # the server sends with it is reserved metadata, which grpcio does not hand to Python.)
        return code == "UNIMPLEMENTED" and GZIP_REFUSAL in (record.get("details") or "")

    def skip(self, name, why):
        self.calls.append({"call": name, "code": None, "skipped": why, "ok": True})

    def params(self):
        return {"pool": self.pool, "thin": "true"}

    def block_capability(self):
        cap = self.pb.VolumeCapability()
        cap.block.SetInParent()
        cap.access_mode.mode = self.pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
        return cap

    def mount_capability(self, fs_type):
        cap = self.pb.VolumeCapability()
        cap.mount.fs_type = fs_type
        cap.access_mode.mode = self.pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
        return cap

    def create(self, label, cap):
        pb = self.pb
        request = pb.CreateVolumeRequest(
            name=f"pyclient-{self.variant.name}-{label}",
            capacity_range=pb.CapacityRange(required_bytes=16 * MIB),
            volume_capabilities=[cap],
            parameters=self.params(),
        )
        response = self.call(f"Controller.CreateVolume[{label}]", self.controller.CreateVolume, request)
        return response.volume.volume_id if response is not None else None

    def run(self):
        pb = self.pb
        info = self.call("Identity.GetPluginInfo", self.identity.GetPluginInfo, pb.GetPluginInfoRequest())
        self.call(
            "Identity.GetPluginCapabilities",
            self.identity.GetPluginCapabilities,
            pb.GetPluginCapabilitiesRequest(),
        )
        self.call("Identity.Probe", self.identity.Probe, pb.ProbeRequest())

        caps = self.call(
            "Controller.ControllerGetCapabilities",
            self.controller.ControllerGetCapabilities,
            pb.ControllerGetCapabilitiesRequest(),
        )
        rpc_type = pb.ControllerServiceCapability.RPC.Type
        offered = {c.rpc.type for c in caps.capabilities} if caps is not None else set()

        block_id = self.create("block", self.block_capability())
        fs_id = self.create("filesystem", self.mount_capability("ext4"))
        self.call("Controller.ListVolumes", self.controller.ListVolumes, pb.ListVolumesRequest())
        self.call(
            "Controller.GetCapacity",
            self.controller.GetCapacity,
            pb.GetCapacityRequest(
                volume_capabilities=[self.block_capability()], parameters=self.params()
            ),
        )

        if rpc_type.CREATE_DELETE_SNAPSHOT not in offered:
            self.skip("Controller.CreateSnapshot", "CREATE_DELETE_SNAPSHOT not advertised")
            self.skip("Controller.DeleteSnapshot", "CREATE_DELETE_SNAPSHOT not advertised")
        elif block_id is None:
            self.skip("Controller.CreateSnapshot", "no block volume")
            self.skip("Controller.DeleteSnapshot", "no block volume")
        else:
            snapshot = self.call(
                "Controller.CreateSnapshot",
                self.controller.CreateSnapshot,
                pb.CreateSnapshotRequest(
                    source_volume_id=block_id, name=f"pyclient-{self.variant.name}-snap"
                ),
            )
            if snapshot is None:
                self.skip("Controller.DeleteSnapshot", "no snapshot")
            else:
                self.call(
                    "Controller.DeleteSnapshot",
                    self.controller.DeleteSnapshot,
                    pb.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot.snapshot_id),
                )

        for label, volume_id in (("block", block_id), ("filesystem", fs_id)):
            name = f"Controller.DeleteVolume[{label}]"
            if volume_id is None:
                self.skip(name, f"no {label} volume")
            else:
                self.call(name, self.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=volume_id))

        self.call("Node.NodeGetInfo", self.node.NodeGetInfo, pb.NodeGetInfoRequest())
        self.call("Node.NodeGetCapabilities", self.node.NodeGetCapabilities, pb.NodeGetCapabilitiesRequest())

        # A request the driver must refuse by its content: CreateVolume without a name.
        self.call(
            "Controller.CreateVolume[no name]",
            self.controller.CreateVolume,
            pb.CreateVolumeRequest(
                capacity_range=pb.CapacityRange(required_bytes=16 * MIB),
                volume_capabilities=[self.block_capability()],
                parameters=self.params(),
            ),
            expect="INVALID_ARGUMENT",
        )
        return info


def oversized_metadata(pb, pb_grpc, target):
    """A call with more metadata than the server's 16 KiB header list limit, then a normal call
    on the same channel: what the first gets is recorded (RFC 9113 lets a server answer 431), the
    second must be served."""
    result = {"metadata_bytes": 20000}
    with grpc.insecure_channel(target) as channel:
        identity = pb_grpc.IdentityStub(channel)
        for key, metadata in (("call", [("x-fastvirt-oversized", "o" * 20000)]), ("follow_up", [])):
            try:
                identity.Probe(pb.ProbeRequest(), timeout=TIMEOUT, metadata=metadata)
                result[key] = {"code": "OK"}
            except grpc.RpcError as error:
                result[key] = {"code": error.code().name, "details": error.details()}
    return result


def outcome(calls):
    """"served": every call got its own status; "refused": every call was properly refused
    (compression); "failed": anything else, a stream reset or a wrong status among them."""
    answered = [c for c in calls if c["code"] is not None]
    if all(c["code"] == c["expected"] for c in answered):
        return "served"
    if all(c["ok"] and c["code"] != c["expected"] for c in answered):
        return "refused"
    return "failed"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--proto", required=True)
    parser.add_argument("--pool", default="default")
    args = parser.parse_args()

    import google.protobuf

    summary = {
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "python": sys.version.split()[0],
        "target": f"unix://{os.path.abspath(args.socket)}",
        "variants": [],
    }
    with tempfile.TemporaryDirectory(prefix="fastvirt-csi-py-") as stubs:
        pb, pb_grpc = generate_stubs(args.proto, stubs)
        for variant in variants():
            # No grpc.default_authority: grpcio picks the authority itself, as CSI tools leave it.
            with grpc.insecure_channel(summary["target"], options=variant.options) as channel:
                runner = Runner(pb, pb_grpc, channel, variant, args.pool)
                runner.run()
            summary["variants"].append(
                {
                    "name": variant.name,
                    "options": [[k, v] for k, v in variant.options],
                    "metadata_bytes": sum(len(k) + len(v) for k, v in variant.metadata),
                    "outcome": outcome(runner.calls),
                    "calls": runner.calls,
                }
            )
        summary["oversized_metadata"] = oversized_metadata(pb, pb_grpc, summary["target"])
    unexpected = [
        f"{v['name']}: {c['call']}: {c['code']} (expected {c['expected']}): {c.get('details', '')}"
        for v in summary["variants"]
        for c in v["calls"]
        if not c["ok"]
    ]
    follow_up = summary["oversized_metadata"]["follow_up"]
    if follow_up["code"] != "OK":
        unexpected.append(f"oversized-metadata: the next call failed: {follow_up}")
    summary["unexpected"] = unexpected
    summary["ok"] = not unexpected
    json.dump(summary, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    for line in unexpected:
        print(f"unexpected: {line}", file=sys.stderr)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
