#!/usr/bin/env bash
# Installs what building and testing Centrex needs and this machine lacks (Debian/Ubuntu).
# Idempotent: a machine that has everything installs nothing.
# --bench: also what the benchmarks compare against (Kamailio, the SIP load reference).
set -euo pipefail

need_apt=()
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)   # etcd-client and proto/ build scripts
# etcd-client's protos import the well-known types, which only come with libprotobuf-dev.
[[ -e /usr/include/google/protobuf/timestamp.proto ]] || need_apt+=(libprotobuf-dev)
command -v etcd >/dev/null || need_apt+=(etcd-server)           # the store contract tests run a real etcd
command -v sipp >/dev/null || need_apt+=(sip-tester)            # SIP tests drive real peers
command -v baresip >/dev/null || need_apt+=(baresip-core)       # the audio test calls between two real softphones
command -v python3 >/dev/null || need_apt+=(python3 python3-venv) # the offline chart checks
if [[ ${1:-} == --bench ]]; then
  command -v kamailio >/dev/null || need_apt+=(kamailio)          # sip_load's kamailio part
fi

if ((${#need_apt[@]})); then
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  echo "installing: ${need_apt[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing: cargo-nextest"
  cargo install --locked cargo-nextest
fi
