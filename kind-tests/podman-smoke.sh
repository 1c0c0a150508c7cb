#!/usr/bin/env bash
# Smoke test of the image without Docker: builds the Dockerfile's runtime-prebuilt target with
# podman from a host-built `centrex` and runs it. Checks that the binary runs on the runtime
# base (glibc and libgcc only: `centrex --version` prints the workspace version), as user
# 65532, and that the image has no shell.
#
# Not part of the default CI run (.ci/run runs it when CENTREX_CONTAINER_CHECK=1): it needs
# podman (installed here from Debian when missing, with runc) and a release build.
#
# The runtime base is gcr.io/distroless/cc-debian12:nonroot. Where that registry cannot be
# reached (as on the development machines), a stand-in is built from the same Debian packages
# (libc6, libgcc-s1) and imported as localhost/centrex-runtime-base:standin: the check is then
# that the binary needs nothing more than distroless/cc gives it.
#
# Usage: kind-tests/podman-smoke.sh
# Environment:
#   CENTREX_BINARY   the binary to put in the image (target/release/centrex, built when missing)
#   RUNTIME_BASE     base image to use instead of pulling distroless or building the stand-in
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
binary=${CENTREX_BINARY:-$repo/target/release/centrex}
distroless=gcr.io/distroless/cc-debian12:nonroot
standin=localhost/centrex-runtime-base:standin
image=localhost/centrex:smoke

log() { echo "podman-smoke: $*" >&2; }
die() {
  log "$*"
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

install_podman() {
  command -v podman >/dev/null && command -v runc >/dev/null && return
  [[ $(id -u) -eq 0 ]] || die "podman and runc are needed (apt-get install podman runc)"
  log "installing podman and runc"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
}

# runc, not Debian's default crun, which cannot start containers on a host with hybrid
# cgroups ("crun: cgroups in hybrid mode not supported"); and limits no higher than the
# host's, which podman's defaults (nofile 1048576) can exceed: setrlimit fails with EPERM.
podman_run() {
  podman --runtime runc run --rm --network none \
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$@"
}

# The distroless/cc contents the binary needs, from Debian's packages, with the nonroot user.
build_standin() {
  log "building $standin from Debian's libc6 and libgcc-s1 ($distroless cannot be pulled)"
  local root="$work/rootfs"
  mkdir -p "$root/etc" "$root/tmp" "$work/debs"
  (cd "$work/debs" && apt-get download libc6 libgcc-s1 gcc-12-base >/dev/null 2>&1) ||
    die "apt-get download failed (run apt-get update first)"
  for deb in "$work"/debs/*.deb; do
    dpkg-deb --extract "$deb" "$root"
  done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  tar --create --directory "$root" . |
    podman import --quiet --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$standin" >/dev/null
}

runtime_base() {
  if [[ -n ${RUNTIME_BASE:-} ]]; then
    echo "$RUNTIME_BASE"
  elif podman pull --quiet "$distroless" >/dev/null 2>"$work/pull.log"; then
    echo "$distroless"
  else
    log "cannot pull $distroless: $(tail -n 1 "$work/pull.log")"
    build_standin
    echo "$standin"
  fi
}

install_podman
if [[ ! -x $binary ]]; then
  log "building $binary"
  (cd "$repo" && nice -n 19 cargo build --release --locked -p centrex)
fi
base=$(runtime_base)

# The build context of runtime-prebuilt: a directory holding only the binary.
mkdir "$work/context"
cp "$binary" "$work/context/centrex"
log "building $image (target runtime-prebuilt on $base)"
podman build --quiet --file "$repo/Dockerfile" --target runtime-prebuilt \
  --build-arg "RUNTIME_BASE=$base" --tag "$image" "$work/context" >/dev/null

expected="centrex $(sed -n '/^\[workspace.package\]/,/^\[/s/^version[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' "$repo/Cargo.toml")"
version=$(podman_run "$image" --version)
[[ $version == "$expected" ]] || die "the image prints '$version', expected '$expected'"
log "centrex --version in the image: $version"

user=$(podman image inspect --format '{{.Config.User}}' "$image")
[[ $user == 65532:65532 ]] || die "the image runs as '$user', expected 65532:65532"
[[ $(podman_run "$image" --help) == *media-node* ]] || die "centrex --help does not list media-node"
if podman_run --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1; then
  die "the image has a shell (/bin/sh)"
fi
log "ok: runs as $user, has no shell, prints $version"
