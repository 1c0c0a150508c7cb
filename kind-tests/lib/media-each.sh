#!/usr/bin/env bash
# Succeeds when a MediaPool has PODS running pods and each has a metric of at least MINIMUM
# (e.g. every pod has relayed calls); prints the per-pod values either way.
#
#   media-each.sh NAMESPACE POOL METRIC MINIMUM PODS
set -euo pipefail

(($# == 5)) || {
  echo "usage: media-each.sh NAMESPACE POOL METRIC MINIMUM PODS" >&2
  exit 2
}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
values=$("$here/media-metric.sh" "$1" "$2" "$3")
echo "$values"
awk -v metric="$3" -v minimum="$4" -v pods="$5" '
  $2 >= minimum { ok++ }
  END { printf "%d of %d pods have %s at least %d\n", ok, NR, metric, minimum; exit !(NR == pods && ok == pods) }
' <<<"$values"
