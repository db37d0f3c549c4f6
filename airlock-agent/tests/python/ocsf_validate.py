#!/usr/bin/env python3
"""Validates OCSF events, one JSON object per line, against the OCSF schema
they name (`metadata.version`, `metadata.profiles`): the official compiled
schema that the `ocsf-json-schema` package (PyPI) ships for each release,
turned into a strict JSON Schema (no unknown field, enums, required fields)
and checked with `jsonschema` (Draft 2020-12).

Usage: ocsf_validate.py FILE [FILE...]. A file of `-` reads stdin. Prints one
line per event (`ok LINE class_uid activity_id`) and every error with its
file, line and field path; exits 1 if any event is invalid or a file is empty.
"""

import json
import sys

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

_schemas = {}


def validator(version, class_uid, profiles):
    key = (version, class_uid, tuple(sorted(profiles)))
    if key not in _schemas:
        ocsf = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
        name = ocsf.lookup_class_name_from_uid(class_uid=class_uid)
        _schemas[key] = Draft202012Validator(ocsf.get_class_schema(class_name=name, profiles=list(profiles)))
    return _schemas[key]


def check(name, lines):
    errors = 0
    count = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        count += 1
        where = f"{name}:{number}"
        try:
            event = json.loads(line)
            meta = event["metadata"]
            v = validator(meta["version"], event["class_uid"], meta.get("profiles", []))
        except Exception as e:  # a line that is not an OCSF event at all
            print(f"error {where}: not an OCSF event: {e!r}")
            errors += 1
            continue
        problems = sorted(v.iter_errors(event), key=lambda e: list(e.absolute_path))
        for p in problems:
            path = ".".join(str(x) for x in p.absolute_path) or "(event)"
            print(f"error {where}: {path}: {p.message}")
        if problems:
            errors += 1
        else:
            print(f"ok {where} {event['class_uid']} {event['activity_id']}")
    if count == 0:
        print(f"error {name}: no events")
        errors += 1
    return errors


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    errors = 0
    for name in sys.argv[1:]:
        if name == "-":
            errors += check("stdin", sys.stdin.read().splitlines())
        else:
            with open(name, encoding="utf-8") as f:
                errors += check(name, f.read().splitlines())
    print(f"{'FAILED' if errors else 'VALID'}: {errors} invalid")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
