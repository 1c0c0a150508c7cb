#!/usr/bin/env bash
# Places calls through the platform, the way two phones would: registers the callee and the
# caller (digest auth), then the caller calls the callee CALLS times with RTP (PCMU) that the
# callee echoes, every call through a signalling pod (B2BUA) and a media pod (relay).
# Exits 0 only when every registration and every call completed (sipp counts a call that was
# not answered, got an error or timed out as failed).
#
# Runs in the sipp Jobs of the kind scenarios (from the sipp-scenarios ConfigMap), and on a
# developer machine against `centrex up --digest-algorithms=MD5` with
# SIP_TARGET=127.0.0.1:5060 LOCAL_IP=127.0.0.1.
#
# Environment:
#   SIP_TARGET        host:port of the SIP service (required)
#   LOCAL_IP          address sipp binds and advertises (the pod IP; required)
#   DOMAIN            the tenant's SIP domain (required)
#   CALLER, CALLER_PASSWORD, CALLEE, CALLEE_PASSWORD   extensions and passwords (required)
#   CALLS             calls to place (10); RATE calls started per second (5);
#   LIMIT             calls up at once (CALLS)
#   SCENARIO          caller scenario: uac_call.xml (1 s of audio, then BYE) or uac_hold.xml
#                     (audio, then held HOLD_MS before BYE)
#   HOLD_MS           how long uac_hold.xml holds each call (30000)
#   STOP_FILE         when set, places batches of CALLS calls until this file exists (a test
#                     creates it with `kubectl exec`), so that calls run for as long as the
#                     test needs them
#   SCENARIO_DIR      where the scenario files are (/scenarios)
#   CALLEE_PORT, CALLER_PORT   SIP ports of the two phones (5070, 5080); the RTP ports are
#                     1000 above them
set -euo pipefail

: "${SIP_TARGET:?}" "${LOCAL_IP:?}" "${DOMAIN:?}"
: "${CALLER:?}" "${CALLER_PASSWORD:?}" "${CALLEE:?}" "${CALLEE_PASSWORD:?}"
calls=${CALLS:-10}
rate=${RATE:-5}
limit=${LIMIT:-$calls}
scenario=${SCENARIO:-uac_call.xml}
hold_ms=${HOLD_MS:-30000}
scenario_dir=${SCENARIO_DIR:-/scenarios}

# The callee answers on the port it registered from; the caller calls from the one it did.
callee_port=${CALLEE_PORT:-5070}
caller_port=${CALLER_PORT:-5080}
# Long enough for every call to start, be held and end; sipp fails the run when it passes.
deadline=$((calls / rate + hold_ms / 1000 + 60))

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$scenario_dir"/*.xml "$work"/
cd "$work"
# One second of PCMU silence: 50 packets of 160 bytes (as signalling/tests/call.rs sends).
head -c 8000 /dev/zero | tr '\000' '\377' >audio.raw

log() { echo "calls: $*"; }

# sipp bound to LOCAL_IP:PORT, over UDP, with errors traced to PORT-errors.log.
run_sipp() {
  local port=$1
  shift
  sipp "$SIP_TARGET" -i "$LOCAL_IP" -p "$port" -t u1 -nostdin -buff_size 4194304 \
    -trace_err -error_file "$work/$port-errors.log" "$@"
}

# Prints what sipp logged about failed messages, then fails.
failed() {
  log "FAILED: $*"
  cat "$work"/*-errors.log 2>/dev/null || true
  exit 1
}

register() {
  local user=$1 password=$2 port=$3
  run_sipp "$port" -sf register.xml -m 1 -au "$user" -ap "$password" \
    -set domain "$DOMAIN" -set user "$user" -timeout 20s -timeout_error >/dev/null ||
    failed "$user@$DOMAIN could not register"
  log "registered $user@$DOMAIN from $LOCAL_IP:$port"
}

register "$CALLEE" "$CALLEE_PASSWORD" "$callee_port"
register "$CALLER" "$CALLER_PASSWORD" "$caller_port"

# One batch: the callee (sipp's built-in UAS, echoing the RTP it gets back to the relay)
# answers the CALLS calls the caller places.
batch() {
  run_sipp "$callee_port" -sn uas -m "$calls" -mi "$LOCAL_IP" -mp $((callee_port + 1000)) -rtp_echo \
    -timeout "${deadline}s" -timeout_error >"$work/callee.log" 2>&1 &
  local callee=$!
  local caller_args=(-sf "$scenario" -s "$CALLEE" -au "$CALLER" -ap "$CALLER_PASSWORD"
    -set domain "$DOMAIN" -set user "$CALLER" -m "$calls" -r "$rate" -l "$limit"
    -mi "$LOCAL_IP" -mp $((caller_port + 1000)) -timeout "${deadline}s" -timeout_error)
  # The scenarios hold each call for sipp's -d: 1.5 s, or HOLD_MS for uac_hold.xml.
  if [[ $scenario == uac_hold.xml ]]; then
    caller_args+=(-d "$hold_ms")
  else
    caller_args+=(-d 1500)
  fi
  # No wait for the callee to bind: until it answers, the B2BUA retransmits its INVITE.
  local caller_status=0 callee_status=0
  run_sipp "$caller_port" "${caller_args[@]}" >"$work/caller.log" 2>&1 || caller_status=$?
  wait "$callee" || callee_status=$?
  # sipp's closing statistics: successful and failed call counts of both sides.
  grep -E "Successful call|Failed call" "$work/caller.log" | sed 's/^/calls: caller /' || true
  grep -E "Successful call|Failed call" "$work/callee.log" | sed 's/^/calls: callee /' || true
  ((caller_status == 0)) || failed "the caller's sipp exited with $caller_status"
  ((callee_status == 0)) || failed "the callee's sipp exited with $callee_status"
}

log "calling $CALLEE from $CALLER: $calls calls, $rate/s, at most $limit at once ($scenario)"
batches=1
batch
if [[ -n ${STOP_FILE:-} ]]; then
  until [[ -e $STOP_FILE ]]; do
    batch
    batches=$((batches + 1))
  done
  log "$STOP_FILE found: stopping after this batch"
fi
log "all $((batches * calls)) calls completed"
