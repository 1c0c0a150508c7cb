#!/usr/bin/env bash
# Offline check of the Helm chart in charts/centrex: no cluster, no helm binary.
#
# Helm comes from the PyPI package helm-python-sdk (pinned in
# scripts/chart-requirements.txt), which bundles Helm's Go SDK as a shared
# library with a Python API. The equivalents of `helm lint --strict` and
# `helm template` below are its lint(strict=True) and Chart.render().
#
#   1. lint --strict and render the chart with each value set: the defaults,
#      values-kind.yaml, an external etcd, and one that turns on every optional
#      value;
#   2. validate every rendered document: built-in kinds with
#      kubernetes-validate --strict (against the chart's minimum Kubernetes
#      version and the newest one kubernetes-validate knows), Centrex custom
#      resources against the openAPIV3Schema of the CRDs in charts/centrex/crds/
#      with jsonschema, unknown fields rejected (CEL rules are not evaluated
#      offline: the API server checks those);
#   3. validate the CRDs themselves with kubernetes-validate --strict;
#   4. check that bad values are rejected: etcd.enabled=false without
#      etcd.external.endpoints, a SIP TLS port without a certificate Secret,
#      and an unknown key (values.schema.json).
#
# With --manifests FILE..., checks those manifest files instead of the chart, the same way as
# step 2 checks rendered documents: built-in kinds with kubernetes-validate --strict, Centrex
# kinds against the chart's CRDs (kind-tests/check.sh does this for what the kind scenarios
# apply).
#
# Usage: scripts/check-chart.sh [--manifests FILE...]   (from anywhere; creates or reuses ./.venv)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
chart="$repo/charts/centrex"
requirements="$repo/scripts/chart-requirements.txt"
# The chart's minimum (Chart.yaml kubeVersion: the CRDs' CEL rules use isIP/isCIDR,
# usable in CRDs from 1.31) and the newest version kubernetes-validate knows.
kube_versions=(1.31.0 1.37.0)

die() {
  echo "check-chart: $*" >&2
  exit 1
}

# A venv needs ensurepip, which Debian ships in python3-venv.
ensure_venv_support() {
  command -v python3 >/dev/null || die "python3 not found"
  python3 -c 'import ensurepip, venv' 2>/dev/null && return
  [[ $(id -u) -eq 0 ]] || die "python3 cannot create a venv: install python3-venv (apt-get install -y python3-venv)"
  echo "check-chart: installing python3-venv" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
}

ensure_venv() {
  if [[ -x $venv/bin/python ]] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    return
  fi
  ensure_venv_support
  echo "check-chart: creating $venv" >&2
  python3 -m venv --clear "$venv"
}

manifests=()
if [[ ${1:-} == --manifests ]]; then
  shift
  (($# > 0)) || die "--manifests needs at least one file"
  manifests=("$@")
elif (($# > 0)); then
  die "unknown arguments: $* (usage: check-chart.sh [--manifests FILE...])"
fi

ensure_venv
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"

"$venv/bin/python" - "$chart" "${kube_versions[@]}" -- "${manifests[@]}" <<'PY'
import sys
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

CHART = Path(sys.argv[1])
_separator = sys.argv.index("--")
KUBE_VERSIONS = sys.argv[2:_separator]
# Manifest files to check instead of the chart (--manifests).
MANIFESTS = [Path(name) for name in sys.argv[_separator + 1:]]
RELEASE = NAMESPACE = "centrex"

# name -> (values files in the chart directory, overrides); like `-f FILE --set ...`.
VALUE_SETS = {
    "default": ([], {}),
    "kind": (["values-kind.yaml"], {}),
    "external-etcd": ([], {"etcd": {"enabled": False, "external": {"endpoints": [
        "http://etcd-0.etcd.db.svc:2379", "http://etcd-1.etcd.db.svc:2379"]}}}),
    "all-options": ([], {
        "image": {"tag": "1.2.3"},
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccount": {"annotations": {"example.com/role": "centrex"}},
        "operator": {
            "replicas": 3,
            "podAnnotations": {"example.com/scrape": "true"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "voice",
                             "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
            "priorityClassName": "system-cluster-critical",
            "metrics": {"service": {"enabled": False}},
        },
        "tracing": {"otlpEndpoint": "http://otel-collector.observability.svc:4317"},
        "signallingPool": {
            "name": "edge",
            "image": "registry.example.com/centrex:1.2.3",
            "sip": {"tlsPort": 5061},
            "tlsSecretName": "sip-tls",
            "service": {"type": "LoadBalancer",
                        "annotations": {"example.com/lb": "external"}},
            "placement": {"nodeSelector": {"example.com/pool": "sip"},
                          "tolerations": [{"key": "sip", "operator": "Exists"}]},
        },
        "mediaPool": {
            "image": "registry.example.com/centrex:1.2.3",
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8},
            "network": {"mode": "HostNetwork", "advertisedAddress": "203.0.113.10"},
            "placement": {"nodeSelector": {"example.com/pool": "media"},
                          "tolerations": [{"key": "media", "operator": "Exists",
                                           "effect": "NoSchedule"}]},
        },
        "etcd": {
            "replicas": 5,
            "persistence": {"size": "20Gi", "storageClass": "fast-ssd"},
            "extraArgs": ["--quota-backend-bytes=4294967296"],
            "nodeSelector": {"example.com/pool": "control"},
            "tolerations": [{"key": "control", "operator": "Exists"}],
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "etcd"}}}]}},
            "podDisruptionBudget": {"enabled": False},
        },
    }),
}

# Values the chart must refuse: name -> (overrides, text the error must contain).
MUST_FAIL = {
    "etcd.enabled=false without endpoints": (
        {"etcd": {"enabled": False}}, "etcd.enabled=false needs etcd.external.endpoints"),
    "SIP TLS port without a certificate Secret": (
        {"signallingPool": {"sip": {"tlsPort": 5061}}}, "needs signallingPool.tlsSecretName"),
    "unknown value key": (
        {"operator": {"replicsa": 3}}, "additional properties 'replicsa' not allowed"),
}

failures = []


def fail(message):
    failures.append(message)
    print(f"  FAIL {message}")


def merge(base, override):
    """Deep-merge override into a copy of base, the way Helm layers values."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def values_for(files, overrides):
    values = {}
    for name in files:
        values = merge(values, helm.values_from_yaml((CHART / name).read_text()))
    return merge(values, overrides)


def strict_schema(schema):
    """An openAPIV3Schema as jsonschema sees it, closer to the API server:
    nullable allows null, and an object with declared properties rejects
    unknown fields (as `kubectl apply --validate=strict` does) unless it
    preserves them."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict_schema(sub) for name, sub in out["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict_schema(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [strict_schema(sub) for sub in out[key]]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_crds(chart):
    """(group, version, kind) -> validator for every CRD in the chart's crds/."""
    validators, names, count = {}, set(), 0
    for crd_file in chart.crds:
        for crd in yaml.safe_load_all(crd_file["data"]):
            if not crd:
                continue
            count += 1
            name = crd["metadata"]["name"]
            where = f"{crd_file['filename']}: CustomResourceDefinition/{name}"
            if name in names:
                fail(f"{where} is defined twice (a stale file in crds/?)")
            names.add(name)
            validate_builtin(crd, where)
            spec = crd["spec"]
            for version in spec["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                # The API server handles these itself; the generated schema omits them.
                schema = dict(schema, properties={
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "metadata": {"type": "object"}, **schema.get("properties", {})})
                schema = strict_schema(schema)
                jsonschema.Draft202012Validator.check_schema(schema)
                key = (spec["group"], version["name"], spec["names"]["kind"])
                validators[key] = jsonschema.Draft202012Validator(schema)
    return validators, count


def validate_builtin(doc, where):
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(root)"
            fail(f"{where}: Kubernetes {e.version}: {path}: {e.message}")
        except (kubernetes_validate.utils.SchemaNotFoundError,
                kubernetes_validate.utils.VersionNotSupportedError) as e:
            fail(f"{where}: {e.message}")


def validate_custom(doc, where, crd_validators):
    group, _, version = doc["apiVersion"].rpartition("/")
    validator = crd_validators.get((group, version, doc["kind"]))
    if validator is None:
        fail(f"{where}: no CRD in {CHART.name}/crds/ serves {doc['apiVersion']} {doc['kind']}")
        return
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        path = ".".join(str(p) for p in error.path) or "(root)"
        fail(f"{where}: {path}: {error.message}")


def check_value_set(chart, name, files, overrides, crd_validators):
    """Lint and render one value set; returns the number of documents validated."""
    failures_before = len(failures)
    values = values_for(files, overrides)
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBE_VERSIONS[0]}")
    for message in report["messages"]:
        if message["severity"] >= 2:  # warning or error: --strict fails on both
            fail(f"{name}: helm lint: {message['path']}: {message['error'].strip()}")
    reported = {message["error"] for message in report["messages"]}
    for error in report["errors"]:
        if error not in reported:
            fail(f"{name}: helm lint: {error.strip()}")
    try:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as e:
        fail(f"{name}: render failed: {e}")
        return 0
    documents, custom, seen = 0, 0, set()
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            if not text.strip():
                fail(f"{name}: {template} renders empty")
            continue
        try:
            docs = [doc for doc in yaml.safe_load_all(text) if doc]
        except yaml.YAMLError as e:
            fail(f"{name}: {template}: not valid YAML: {' '.join(str(e).split())}")
            continue
        for doc in docs:
            documents += 1
            meta = doc.get("metadata") or {}
            where = f"{name}: {template}: {doc.get('kind')}/{meta.get('name')}"
            identity = (doc.get("apiVersion"), doc.get("kind"), meta.get("namespace"), meta.get("name"))
            if identity in seen:
                fail(f"{where}: rendered twice")
            seen.add(identity)
            if doc.get("apiVersion", "").startswith("centrex.dev/"):
                custom += 1
                validate_custom(doc, where, crd_validators)
            else:
                validate_builtin(doc, where)
    problems = len(failures) - failures_before
    print(f"  {name}: {documents} documents ({documents - custom} built-in, "
          f"{custom} custom resources): {'ok' if not problems else f'{problems} problem(s)'}")
    return documents


def check_must_fail(chart, name, overrides, expected):
    try:
        chart.render(overrides, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as e:
        if expected in str(e):
            print(f"  rejected as expected: {name}")
            return
        fail(f"{name}: rejected, but not with '{expected}': {e}")
        return
    fail(f"{name}: rendered, but must be rejected")


def check_manifests(crd_validators):
    """Validates every document of the MANIFESTS files; returns how many there were."""
    documents = 0
    for path in MANIFESTS:
        try:
            docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        except (OSError, yaml.YAMLError) as e:
            fail(f"{path}: {' '.join(str(e).split())}")
            continue
        for doc in docs:
            documents += 1
            meta = doc.get("metadata") or {}
            where = f"{path}: {doc.get('kind')}/{meta.get('name')}"
            if doc.get("apiVersion", "").startswith("centrex.dev/"):
                validate_custom(doc, where, crd_validators)
            else:
                validate_builtin(doc, where)
    return documents


if MANIFESTS:
    with helm.Chart.load(CHART) as chart:
        crd_validators, crd_count = load_crds(chart)
    total = check_manifests(crd_validators)
    if failures:
        print(f"manifests: FAILED with {len(failures)} problem(s)")
        sys.exit(1)
    print(f"manifests: {total} documents in {len(MANIFESTS)} files validated "
          f"(Kubernetes {' and '.join(KUBE_VERSIONS)}; Centrex kinds against {crd_count} CRDs)")
    sys.exit(0)

print(f"chart: {CHART} with Helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
      f"kubernetes-validate {kubernetes_validate.__version__}")
with helm.Chart.load(CHART) as chart:
    crd_validators, crd_count = load_crds(chart)
    print(f"  crds: {crd_count} CustomResourceDefinitions checked")
    total = sum(check_value_set(chart, name, files, overrides, crd_validators)
                for name, (files, overrides) in VALUE_SETS.items())
    for name, (overrides, expected) in MUST_FAIL.items():
        check_must_fail(chart, name, overrides, expected)

if failures:
    print(f"chart: FAILED with {len(failures)} problem(s)")
    sys.exit(1)
print(f"chart: {total} documents rendered and validated across {len(VALUE_SETS)} value sets "
      f"(Kubernetes {' and '.join(KUBE_VERSIONS)}; {crd_count} CRDs; "
      f"{len(MUST_FAIL)} bad value sets rejected)")
PY
