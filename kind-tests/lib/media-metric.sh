#!/usr/bin/env bash
# Prints one metric of every running pod of a MediaPool, "POD VALUE" a line, read from the
# pods' /metrics through the API server's pod proxy (no port-forward, nothing in the image).
# A pod that does not export the metric yet counts as 0.
#
#   media-metric.sh NAMESPACE POOL METRIC      e.g. media-metric.sh default default centrex_media_sessions
set -euo pipefail

(($# == 3)) || {
  echo "usage: media-metric.sh NAMESPACE POOL METRIC" >&2
  exit 2
}
namespace=$1 pool=$2 metric=$3
# The port of /metrics on media pods (OperatorConfig::HTTP_PORT).
http_port=8080

# The pool's own pod selector: what the scale subresource and HPAs use.
selector=$(kubectl --namespace "$namespace" get mediapool "$pool" -o jsonpath='{.status.selector}')
[[ -n $selector ]] || {
  echo "media-metric: MediaPool $namespace/$pool has no status.selector yet" >&2
  exit 1
}
pods=$(kubectl --namespace "$namespace" get pods --selector "$selector" \
  --field-selector status.phase=Running -o jsonpath='{.items[*].metadata.name}')
[[ -n $pods ]] || {
  echo "media-metric: no running pod in MediaPool $namespace/$pool" >&2
  exit 1
}
for pod in $pods; do
  value=$(kubectl get --raw "/api/v1/namespaces/$namespace/pods/$pod:$http_port/proxy/metrics" |
    awk -v metric="$metric" '$1 == metric { print $2; exit }')
  echo "$pod ${value:-0}"
done
