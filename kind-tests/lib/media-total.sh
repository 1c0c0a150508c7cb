#!/usr/bin/env bash
# Succeeds when a metric summed over a MediaPool's running pods is at least MINIMUM; prints the
# per-pod values and the sum either way.
#
#   media-total.sh NAMESPACE POOL METRIC MINIMUM
set -euo pipefail

(($# == 4)) || {
  echo "usage: media-total.sh NAMESPACE POOL METRIC MINIMUM" >&2
  exit 2
}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
values=$("$here/media-metric.sh" "$1" "$2" "$3")
echo "$values"
total=$(awk '{ sum += $2 } END { printf "%d", sum }' <<<"$values")
echo "total $3: $total (want at least $4)"
((total >= $4))
