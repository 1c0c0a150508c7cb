#!/usr/bin/env bash
# The kind suite from start to end, for CI and for a developer with Docker:
#   1. create a kind cluster (kind-config.yaml);
#   2. build the Centrex image (Dockerfile) and the sipp image (sipp/Dockerfile), load both
#      into the cluster's nodes;
#   3. install the chart (charts/centrex with values-kind.yaml, the image just built);
#   4. run the chainsaw scenarios in scenarios/, in order, stopping at the first failure;
#   5. on failure, dump events, descriptions and logs into $ARTIFACTS;
#   6. delete the cluster (unless KEEP_CLUSTER=1).
#
# Usage: kind-tests/run.sh [SCENARIO...]    e.g. kind-tests/run.sh 01-install 03-calls
#        (the default is every scenario; 01-install and 02-examples set up what the others use)
#
# Needs docker, kind, kubectl, helm and chainsaw on PATH (versions: kind-tests/README.md).
# Environment:
#   KIND_CLUSTER      cluster name (centrex-kind); an existing one is reused
#   KIND_NODE_IMAGE   node image, i.e. the Kubernetes version (kindest/node:v1.32.2)
#   CENTREX_IMAGE     tag of the Centrex image (the chart's default: its repository and appVersion)
#   SIPP_IMAGE        tag of the sipp image (centrex-sipp:dev)
#   SKIP_BUILD=1      load images that are already built instead of building them
#   KEEP_CLUSTER=1    keep the cluster afterwards, to look around or to rerun one scenario
#   ARTIFACTS         where diagnostics go on failure (target/kind-artifacts)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
chart="$repo/charts/centrex"
cluster=${KIND_CLUSTER:-centrex-kind}
node_image=${KIND_NODE_IMAGE:-kindest/node:v1.32.2}
artifacts=${ARTIFACTS:-$repo/target/kind-artifacts}
release=centrex
release_namespace=centrex
# The namespace the examples (and so the scenarios' sipp Jobs) live in.
examples_namespace=default

log() { echo "kind-tests: $*" >&2; }
die() {
  log "$*"
  exit 1
}

chart_value() { # KEY FILE: a top-level scalar of a flat YAML file, quotes removed
  sed -n "s/^$1:[[:space:]]*\"\{0,1\}\([^\"]*\)\"\{0,1\}[[:space:]]*$/\1/p" "$2" | head -n 1
}

# The chart's default image is what gets built and loaded: image.repository of values.yaml
# with the chart's appVersion as tag.
default_image() {
  local repository version
  repository=$(sed -n '/^image:/,/^[^ #]/s/^  repository:[[:space:]]*//p' "$chart/values.yaml" | head -n 1)
  version=$(chart_value appVersion "$chart/Chart.yaml")
  [[ -n $repository && -n $version ]] || die "cannot read the default image from $chart"
  echo "$repository:$version"
}

image=${CENTREX_IMAGE:-$(default_image)}
sipp_image=${SIPP_IMAGE:-centrex-sipp:dev}

scenarios=("$@")
if ((${#scenarios[@]} == 0)); then
  for dir in "$here"/scenarios/*/; do # globs expand sorted: 01-…, 02-…
    dir=${dir%/}
    scenarios+=("${dir##*/}")
  done
fi
for scenario in "${scenarios[@]}"; do
  [[ -f $here/scenarios/$scenario/chainsaw-test.yaml ]] || die "no scenario $scenario in $here/scenarios"
done

for tool in docker kind kubectl helm chainsaw; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH (see kind-tests/README.md)"
done

# Everything a person needs to see why a scenario failed, without the cluster.
dump_diagnostics() {
  log "collecting diagnostics into $artifacts"
  mkdir -p "$artifacts/logs"
  local namespaces=("$release_namespace" "$examples_namespace")
  {
    kubectl get nodes -o wide
    kubectl get tenants,trunks,mediapools,signallingpools --all-namespaces -o wide
    kubectl get all,leases,pdb,configmaps --namespace "$release_namespace" -o wide
    kubectl get all,pdb,configmaps --namespace "$examples_namespace" -o wide
  } >"$artifacts/resources.txt" 2>&1 || true
  kubectl get events --all-namespaces --sort-by=.lastTimestamp >"$artifacts/events.txt" 2>&1 || true
  kubectl describe tenants,trunks,mediapools,signallingpools --all-namespaces \
    >"$artifacts/describe-centrex-resources.txt" 2>&1 || true
  local namespace pod
  for namespace in "${namespaces[@]}"; do
    kubectl describe pods,deployments,statefulsets,jobs,services,leases --namespace "$namespace" \
      >"$artifacts/describe-$namespace.txt" 2>&1 || true
    for pod in $(kubectl get pods --namespace "$namespace" -o name 2>/dev/null); do
      pod=${pod#pod/}
      kubectl logs --namespace "$namespace" "$pod" --all-containers --timestamps \
        >"$artifacts/logs/$namespace.$pod.log" 2>&1 || true
      kubectl logs --namespace "$namespace" "$pod" --all-containers --timestamps --previous \
        >"$artifacts/logs/$namespace.$pod.previous.log" 2>/dev/null ||
        rm -f "$artifacts/logs/$namespace.$pod.previous.log"
    done
  done
  kind export logs "$artifacts/kind" --name "$cluster" >/dev/null 2>&1 || true
}

finish() {
  local status=$?
  if ((status != 0)) && kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    dump_diagnostics
  fi
  if [[ ${KEEP_CLUSTER:-0} == 1 ]]; then
    log "keeping cluster $cluster (kind delete cluster --name $cluster)"
  else
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap finish EXIT

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  log "reusing cluster $cluster"
else
  log "creating cluster $cluster ($node_image)"
  kind create cluster --name "$cluster" --image "$node_image" --config "$here/kind-config.yaml" --wait 180s
fi
kubectl config use-context "kind-$cluster" >/dev/null

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building $image"
  docker build --tag "$image" "$repo"
  log "building $sipp_image"
  docker build --tag "$sipp_image" "$here/sipp"
fi
kind load docker-image --name "$cluster" "$image" "$sipp_image"

log "installing the chart (release $release in namespace $release_namespace)"
helm upgrade --install "$release" "$chart" \
  --namespace "$release_namespace" --create-namespace \
  --values "$chart/values-kind.yaml" \
  --set "image.repository=${image%:*}" --set "image.tag=${image##*:}"

for scenario in "${scenarios[@]}"; do
  log "scenario $scenario"
  chainsaw test --config "$here/chainsaw.yaml" --test-dir "$here/scenarios/$scenario" ||
    die "scenario $scenario failed"
done
log "every scenario passed: ${scenarios[*]}"
