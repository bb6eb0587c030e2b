"""Checks fastvirt custom resources against the generated CRD schemas, the way the API server would.

The CRDs' openAPIV3Schema is structural OpenAPI, not JSON Schema: `nullable`, int-or-string and
pruning of unknown fields have no JSON Schema keyword. `to_json_schema` translates them, so that
jsonschema can check a resource strictly (an unknown field is an error, as with kubectl's strict
field validation). CEL rules (x-kubernetes-validations) cannot be evaluated here; the operator's
tests cover them.

Commands (run with the venv that scripts/install-chart-tools.sh creates):
  validate CRD_DIR FILE...       every fastvirt.io object in the YAML files against its CRD
  values-defs CRD_DIR SCHEMA     check that SCHEMA's $defs hold the translated spec schemas
  values-defs CRD_DIR SCHEMA --write   rewrite them after the CRDs changed
"""

import copy
import json
import pathlib
import sys

import jsonschema
import yaml

# values.schema.json $defs entry -> (CRD kind), for the chart's example resources.
VALUES_DEFS = {
    "blockPoolSpec": "BlockPool",
    "nodeTuningProfileSpec": "NodeTuningProfile",
}


def to_json_schema(schema):
    """Translates one structural OpenAPI v3 schema node (recursively) to JSON Schema."""
    schema = copy.deepcopy(schema)
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


def load_crds(crd_dir):
    """(group, version, kind) -> translated JSON Schema of the whole object."""
    crds = {}
    for path in sorted(pathlib.Path(crd_dir).glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                # Every object has these, whether or not the CRD's schema names them.
                properties = schema.setdefault("properties", {})
                properties.setdefault("apiVersion", {"type": "string"})
                properties.setdefault("kind", {"type": "string"})
                properties.setdefault("metadata", {"type": "object"})
                crds[(group, version["name"], kind)] = to_json_schema(schema)
    if not crds:
        sys.exit(f"no CRDs in {crd_dir}")
    return crds


def validate(crd_dir, files):
    crds = load_crds(crd_dir)
    groups = {group for group, _, _ in crds}
    checked = 0
    errors = []
    for file in files:
        for document in yaml.safe_load_all(pathlib.Path(file).read_text()):
            if not document:
                continue
            group, _, version = document.get("apiVersion", "").rpartition("/")
            if group not in groups:
                continue
            kind = document.get("kind")
            name = (document.get("metadata") or {}).get("name")
            schema = crds.get((group, version, kind))
            if schema is None:
                errors.append(f"{file}: {kind}/{name}: no served CRD version {group}/{version}")
                continue
            validator = jsonschema.Draft202012Validator(schema)
            for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path)):
                where = ".".join(str(p) for p in error.absolute_path) or "(root)"
                errors.append(f"{file}: {kind}/{name}: {where}: {error.message}")
            checked += 1
    for error in errors:
        print(error)
    print(f"custom resources checked: {checked}, errors: {len(errors)}")
    return 1 if errors else 0


def values_defs(crd_dir, schema_file, write):
    crds = load_crds(crd_dir)
    by_kind = {kind: schema for (_, _, kind), schema in crds.items()}
    path = pathlib.Path(schema_file)
    values_schema = json.loads(path.read_text())
    defs = values_schema.setdefault("$defs", {})
    stale = []
    for name, kind in VALUES_DEFS.items():
        expected = by_kind[kind]["properties"]["spec"]
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
    if len(argv) >= 3 and argv[0] == "validate":
        return validate(argv[1], argv[2:])
    if argv[:1] == ["values-defs"] and (len(argv) == 3 or argv[3:] == ["--write"]):
        return values_defs(argv[1], argv[2], write=len(argv) == 4)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
