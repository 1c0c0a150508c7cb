#!/usr/bin/env bash
# What the kind suite needs, checked without Docker or a cluster (CI runs it from .ci/run):
#   1. the scripts pass shellcheck;
#   2. the chart renders with values-kind.yaml and passes kubernetes-validate --strict
#      (scripts/check-chart.sh, which checks every value set);
#   3. the chainsaw scenarios are well formed: each is a chainsaw Test, every file an operation
#      names exists, every script they call exists and is executable, no step sleeps;
#   4. every manifest the scenarios apply validates: the files of their apply and create
#      operations (templates with each operation's bindings substituted), the objects their
#      patch operations produce, and the sipp ConfigMap (kind-tests/sipp/configmap.sh), checked
#      by `scripts/check-chart.sh --manifests` (built-in kinds with kubernetes-validate
#      --strict, Centrex kinds against the chart's CRDs);
#   5. the image the kind suite builds is the chart's default: appVersion is the workspace's
#      version, so the `centrex --version` of the image matches the tag the chart deploys.
#
# Usage: kind-tests/check.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

die() {
  echo "kind-tests check: $*" >&2
  exit 1
}

echo "kind-tests check: shellcheck"
command -v shellcheck >/dev/null || die "shellcheck not found (apt-get install shellcheck)"
mapfile -t scripts < <(find "$here" -name '*.sh' | sort)
shellcheck --external-sources "${scripts[@]}"
echo "  ${#scripts[@]} scripts pass"

echo "kind-tests check: the chart (scripts/check-chart.sh)"
"$repo/scripts/check-chart.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "kind-tests check: the scenarios"
"$here/sipp/configmap.sh" >"$work/sipp-scenarios.yaml"
# The venv scripts/check-chart.sh just made has PyYAML.
"$repo/.venv/bin/python" - "$repo" "$work" <<'PY'
import glob
import re
import sys
from pathlib import Path

import yaml

REPO, OUT = Path(sys.argv[1]), Path(sys.argv[2])
SCENARIOS = REPO / "kind-tests" / "scenarios"
# Operations whose `file` or `resource` is an object sent to the API server as it is.
APPLIED = ("apply", "create")
# Operations whose `file` names assertions (partial objects), not manifests.
ASSERTED = ("assert", "error")
BLOCKS = ("try", "catch", "finally", "cleanup")
EXPRESSION = re.compile(r"^\((.*)\)$")
BINDING = re.compile(r"^\(\$([A-Za-z_][A-Za-z0-9_]*)\)$")
SCRIPT_PATH = re.compile(r"(?:\.\./)+[\w./-]+\.sh")

problems = []


def problem(message):
    problems.append(message)
    print(f"  FAIL {message}")


def substitute(node, bindings, where):
    """The object chainsaw applies: every `($name)` string replaced by the binding's value."""
    if isinstance(node, dict):
        return {key: substitute(value, bindings, where) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute(value, bindings, where) for value in node]
    if isinstance(node, str) and EXPRESSION.match(node):
        binding = BINDING.match(node)
        if not binding:
            problem(f"{where}: {node!r}: only plain bindings are checked offline")
            return node
        if binding.group(1) not in bindings:
            problem(f"{where}: {node!r} has no binding")
            return node
        return bindings[binding.group(1)]
    return node


def merge(base, patch):
    """A JSON merge patch (RFC 7386), as chainsaw's patch operation sends."""
    if not isinstance(patch, dict):
        return patch
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def identity(doc):
    meta = doc.get("metadata") or {}
    return (doc.get("kind"), meta.get("name"))


def files(test_dir, pattern, where):
    matches = sorted(glob.glob(str(test_dir / pattern)))
    if not matches:
        problem(f"{where}: no file matches {pattern}")
    return [Path(m) for m in matches]


applied = {}  # (kind, name) -> the latest object the scenarios applied, for patches
outputs = []  # manifest files to validate
operations = 0


def emit(doc, where):
    name = f"{len(outputs):03d}-{(doc.get('kind') or 'object').lower()}.yaml"
    path = OUT / name
    path.write_text(f"# {where}\n" + yaml.safe_dump(doc, sort_keys=False))
    outputs.append(path)
    applied[identity(doc)] = doc


def check_operation(test_dir, kind, spec, where):
    global operations
    operations += 1
    if kind == "sleep":
        problem(f"{where}: sleeps; wait on a condition with a deadline instead")
        return
    if kind == "script":
        content = spec.get("content", "")
        if re.search(r"(^|[;&|\s])sleep\s", content):
            problem(f"{where}: the script sleeps; use lib/wait-for.sh with a deadline")
        for script in SCRIPT_PATH.findall(content):
            path = (test_dir / script).resolve()
            if not path.is_file():
                problem(f"{where}: {script} does not exist")
            elif not path.stat().st_mode & 0o111:
                problem(f"{where}: {script} is not executable")
        return
    if kind in APPLIED or kind in ASSERTED or kind == "patch":
        bindings = {b["name"]: b["value"] for b in spec.get("bindings", [])}
        if "file" in spec:
            docs = []
            for path in files(test_dir, spec["file"], where):
                docs += [(doc, f"{path.relative_to(REPO)}") for doc in yaml.safe_load_all(path.read_text()) if doc]
        elif "resource" in spec:
            docs = [(spec["resource"], where)]
        else:
            problem(f"{where}: {kind} names neither a file nor a resource")
            return
        if kind in ASSERTED:
            return
        for doc, source in docs:
            doc = substitute(doc, bindings, source)
            if kind == "patch":
                base = applied.get(identity(doc))
                if base is None:
                    problem(f"{where}: patches {identity(doc)}, which no earlier scenario applies")
                    continue
                doc = merge(base, doc)
            refused = any("$error != null" in str(e.get("check")) for e in spec.get("expect", []))
            emit(doc, f"{source} ({where}{', expected to be refused by a CEL rule' if refused else ''})")


for test_file in sorted(SCENARIOS.glob("*/chainsaw-test.yaml")):
    test_dir = test_file.parent
    name = test_dir.name
    if not re.match(r"^\d\d-[a-z0-9-]+$", name):
        problem(f"{name}: scenario directories are named NN-what (they run in that order)")
    tests = [doc for doc in yaml.safe_load_all(test_file.read_text()) if doc]
    if len(tests) != 1 or tests[0].get("apiVersion") != "chainsaw.kyverno.io/v1alpha1" \
            or tests[0].get("kind") != "Test":
        problem(f"{name}: chainsaw-test.yaml must hold one chainsaw.kyverno.io/v1alpha1 Test")
        continue
    spec = tests[0].get("spec") or {}
    NAMESPACE = spec.get("namespace", "default")
    steps = spec.get("steps") or []
    if not steps:
        problem(f"{name}: no steps")
    for i, step in enumerate(steps):
        for block in BLOCKS:
            for j, operation in enumerate(step.get(block) or []):
                kinds = [k for k in operation if k not in ("description", "continueOnError", "compiler")]
                if len(kinds) != 1:
                    problem(f"{name}: step {i + 1} {block}[{j}]: one operation each, found {kinds}")
                    continue
                where = f"{name}: step {i + 1} ({step.get('name', '?')}) {block}[{j}] {kinds[0]}"
                check_operation(test_dir, kinds[0], operation[kinds[0]], where)
    for j, operation in enumerate(spec.get("catch") or []):
        for kind, body in operation.items():
            check_operation(test_dir, kind, body, f"{name}: catch[{j}] {kind}")
    print(f"  {name}: {len(steps)} steps")

(OUT / "files").write_text("".join(f"{p}\n" for p in outputs))
if problems:
    print(f"scenarios: FAILED with {len(problems)} problem(s)")
    sys.exit(1)
print(f"scenarios: {operations} operations checked; {len(outputs)} applied objects to validate")
PY

echo "kind-tests check: what the scenarios apply"
mapfile -t manifests <"$work/files"
"$repo/scripts/check-chart.sh" --manifests "${manifests[@]}" "$work/sipp-scenarios.yaml"

echo "kind-tests check: the image version"
app_version=$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$/\1/p' "$repo/charts/centrex/Chart.yaml")
crate_version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' "$repo/Cargo.toml")
[[ -n $app_version && $app_version == "$crate_version" ]] ||
  die "charts/centrex/Chart.yaml appVersion ($app_version) is not the workspace version ($crate_version): the chart would deploy an image tag that is not the binary's version"
echo "  appVersion $app_version is the workspace version"
echo "kind-tests check: ok"
