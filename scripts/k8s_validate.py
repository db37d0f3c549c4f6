#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests offline (run by `cargo xtask k8s`).

Every document must validate, or the run fails; nothing is skipped quietly:
- built-in kinds against the OpenAPI schemas kubernetes-validate ships for
  each Kubernetes version asked for, strict (an unknown field is an error);
- custom resources against the openAPIV3Schema of a CRD file given with
  --crd, made strict the same way (an object that lists its properties
  accepts no others, unless the CRD says x-kubernetes-preserve-unknown-fields);
- a kind with neither is an error ("no schema").
On top, every container of a pod template must have resource requests, a
memory limit, a readiness and a liveness probe.

usage: k8s_validate.py -k 1.30.0 [-k 1.35.0] [--crd CRD.yaml]... FILE...
Prints one line per document and version; exits 1 if any failed.
"""

import argparse
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv


def strict(schema):
    """A copy of a CRD's structural schema that refuses unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_crds(paths):
    """(apiVersion, kind) -> (validator, source) for every served version."""
    found = {}
    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    if not version.get("served", True):
                        continue
                    schema = strict(version["schema"]["openAPIV3Schema"])
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    found[key] = (jsonschema.Draft202012Validator(schema), path)
    return found


def name_of(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def pod_spec(doc):
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        return spec
    if doc.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return ((spec.get("template") or {}).get("spec")) if "template" in spec else None


def container_rules(doc):
    """What the schemas cannot say: every container is sized and probed."""
    spec = pod_spec(doc)
    if not spec:
        return []
    problems = []
    for i, c in enumerate(spec.get("containers") or []):
        where = f"spec.template.spec.containers[{i}] ({c.get('name', '?')})"
        res = c.get("resources") or {}
        if not (res.get("requests") or {}).get("cpu") or not (res.get("requests") or {}).get("memory"):
            problems.append(f"{where}: resources.requests needs cpu and memory")
        if not (res.get("limits") or {}).get("memory"):
            problems.append(f"{where}: resources.limits needs memory")
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in c:
                problems.append(f"{where}: no {probe}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--kubernetes-version", action="append", required=True)
    parser.add_argument("--crd", action="append", default=[])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    crds = load_crds(args.crd)
    failed = 0
    checked = 0
    for path in args.files:
        with open(path) as f:
            try:
                docs = [d for d in yaml.safe_load_all(f) if d]
            except yaml.YAMLError as e:
                print(f"ERROR {path}: not YAML: {e}")
                failed += 1
                continue
        for doc in docs:
            name = name_of(doc)
            checked += 1
            for problem in container_rules(doc):
                print(f"ERROR {path}: {name}: {problem}")
                failed += 1
            crd = crds.get((doc.get("apiVersion"), doc.get("kind")))
            if crd is not None:
                validator, source = crd
                errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
                for e in errors:
                    where = ".".join(str(p) for p in e.path) or "(root)"
                    print(f"ERROR {path}: {name}: {where}: {e.message} (CRD {source}, strict)")
                failed += len(errors)
                if not errors:
                    print(f"ok    {path}: {name} against the CRD {source} (strict)")
                continue
            for version in args.kubernetes_version:
                try:
                    got = kv.validate(doc, version, strict=True)
                    print(f"ok    {path}: {name} against Kubernetes {got} (strict)")
                except kv.ValidationError as e:
                    where = ".".join(str(p) for p in e.path) or "(root)"
                    print(f"ERROR {path}: {name}: {where}: {e.message} (Kubernetes {e.version}, strict)")
                    failed += 1
                except kv.SchemaNotFoundError as e:
                    print(f"ERROR {path}: {name}: no schema: {e.message}, and no --crd for it")
                    failed += 1
                except kv.VersionNotSupportedError as e:
                    print(f"ERROR kubernetes-validate has no schemas for Kubernetes {e.version}")
                    return 2
    print(f"{checked} documents, {failed} errors")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
