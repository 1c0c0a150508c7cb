#!/usr/bin/env bash
# Waits until a command succeeds, checking every 2 seconds, and fails at a deadline: the one
# way the scenarios' scripts wait for something.
#
#   wait-for.sh SECONDS DESCRIPTION COMMAND [ARG...]
#   wait-for.sh 120 "both calls up" ../../lib/media-total.sh default default centrex_media_sessions 2
set -euo pipefail

(($# >= 3)) || {
  echo "usage: wait-for.sh SECONDS DESCRIPTION COMMAND [ARG...]" >&2
  exit 2
}
seconds=$1 description=$2
shift 2

deadline=$((SECONDS + seconds))
until output=$("$@" 2>&1); do
  if ((SECONDS >= deadline)); then
    echo "wait-for: gave up after ${seconds}s waiting for $description; last output:" >&2
    echo "$output" >&2
    exit 1
  fi
  sleep 2
done
echo "wait-for: $description (after $((seconds - (deadline - SECONDS)))s)"
[[ -z $output ]] || echo "$output"
