#!/usr/bin/env bash
# Shows an object the way `kubectl get` does (its CRD's printer columns) and fails when a column
# is empty (`<none>`), i.e. when a column's jsonPath names a field the operator does not fill.
#
#   printer-columns.sh NAMESPACE KIND NAME        e.g. printer-columns.sh default tenant acme
set -euo pipefail

(($# == 3)) || {
  echo "usage: printer-columns.sh NAMESPACE KIND NAME" >&2
  exit 2
}
namespace=$1 kind=$2 name=$3

table=$(kubectl --namespace "$namespace" get "$kind" "$name")
echo "$table"
header=$(head -n 1 <<<"$table")
row=$(sed -n 2p <<<"$table")
read -r -a columns <<<"$header"
read -r -a values <<<"$row"
if ((${#values[@]} != ${#columns[@]})); then
  echo "printer-columns: $kind/$name shows ${#values[@]} values for ${#columns[@]} columns" >&2
  exit 1
fi
for i in "${!columns[@]}"; do
  if [[ ${values[i]} == "<none>" ]]; then
    echo "printer-columns: $kind/$name has no value in column ${columns[i]}" >&2
    exit 1
  fi
done
echo "printer-columns: $kind/$name fills all ${#columns[@]} columns"
