"""Keeps values.schema.json's example-resource schemas equal to the CRDs' spec schemas.

The chart's values.schema.json checks `examples.blockPool.spec` and `examples.nodeTuningProfile.spec`
against the CRDs, so a wrong field in an example fails `helm lint` before anything reaches a
cluster. The CRDs' openAPIV3Schema is structural OpenAPI, not JSON Schema: `nullable`,
int-or-string and pruning of unknown fields have no JSON Schema keyword, and `to_json_schema`
translates them (unknown fields become errors, as with kubectl's strict field validation). CEL rules
(x-kubernetes-validations) cannot be expressed; the chart tests check the rendered resources with
fastvirt-api's validator, which evaluates them.

Commands (run with the venv that scripts/install-chart-tools.sh creates):
  values-defs CRD_DIR SCHEMA           check that SCHEMA's $defs hold the translated spec schemas
  values-defs CRD_DIR SCHEMA --write   rewrite them after the CRDs changed
"""

import json
import pathlib
import sys

import yaml

# values.schema.json $defs entry -> (CRD kind), for the chart's example resources.
VALUES_DEFS = {
    "blockPoolSpec": "BlockPool",
    "nodeTuningProfileSpec": "NodeTuningProfile",
}


def to_json_schema(schema):
    """Translates one structural OpenAPI v3 schema node (recursively) to JSON Schema."""
    out = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        elif key == "not":
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = types + ["null"]
    # The API server prunes fields a structural schema does not name; strict validation rejects
    # them. Objects that are maps (additionalProperties) or opaque keep their meaning.
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def spec_schemas(crd_dir):
    """Kind -> translated schema of `spec`, from the first served version of each CRD."""
    schemas = {}
    for path in sorted(pathlib.Path(crd_dir).glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True) and kind not in schemas:
                root = version["schema"]["openAPIV3Schema"]
                schemas[kind] = to_json_schema(root["properties"]["spec"])
    if not schemas:
        sys.exit(f"no CRDs in {crd_dir}")
    return schemas


def values_defs(crd_dir, schema_file, write):
    by_kind = spec_schemas(crd_dir)
    path = pathlib.Path(schema_file)
    values_schema = json.loads(path.read_text())
    defs = values_schema.setdefault("$defs", {})
    stale = []
    for name, kind in VALUES_DEFS.items():
        expected = by_kind[kind]
        if defs.get(name) != expected:
            stale.append(name)
            defs[name] = expected
    if write:
        path.write_text(json.dumps(values_schema, indent=2) + "\n")
        return 0
    if stale:
        print(
            f"{schema_file}: $defs {', '.join(stale)} differ from the CRDs in {crd_dir}; run "
            f"`target/tools/venv/bin/python charts/tests/crd_schema.py values-defs {crd_dir} "
            f"{schema_file} --write`"
        )
        return 1
    return 0


def main(argv):
    if argv[:1] == ["values-defs"] and (len(argv) == 3 or argv[3:] == ["--write"]):
        return values_defs(argv[1], argv[2], write=len(argv) == 4)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
