# syntax=docker/dockerfile:1
# The one Centrex image: the `centrex` binary (operator, signalling, media-node, up, crdgen) on
# a distroless base: glibc and libgcc only, no shell, no package manager, user 65532.
#
#   docker build -t ghcr.io/centrex/centrex:0.1.0 .          # what the chart deploys by default
#   kind-tests/run.sh                                         # builds it, loads it into kind
#
# Targets:
#   runtime (default, last)  builds the binary in the `build` stage, copies it onto the base.
#   runtime-prebuilt         takes a binary built on the host instead: the build context is a
#                            directory holding only `centrex` (kind-tests/podman-smoke.sh).
#
# The pod specs run `centrex media-node drain` as an exec preStop hook, so the binary lives on
# the image's PATH (/usr/local/bin), not at the root.

ARG BUILDER_BASE=rust:1-bookworm
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

# Every manifest and lock file, and every .rs path as an empty file: enough for `cargo fetch`.
# The next stage copies this tree, so its download layer is rebuilt only when a manifest,
# Cargo.lock or the set of source files changes, not on every edit.
FROM ${BUILDER_BASE} AS recipe
WORKDIR /src
COPY . .
RUN mkdir /recipe \
    && find . \( -name Cargo.toml -o -name Cargo.lock \) -exec cp --parents {} /recipe \; \
    && find . -name '*.rs' | while read -r file; do \
         mkdir -p "/recipe/${file%/*}" && : > "/recipe/$file"; \
       done

FROM ${BUILDER_BASE} AS build
# protoc for the gRPC contracts (proto/build.rs, etcd-client), with the well-known types
# (google/protobuf/*.proto) that etcd-client's protos import: libprotobuf-dev, which is only a
# recommendation of protobuf-compiler.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY --from=recipe /recipe ./
RUN cargo fetch --locked
COPY . .
# The target directory is a build cache, not a layer: incremental rebuilds stay fast and the
# layer holds only the binary.
RUN --mount=type=cache,target=/src/target,id=centrex-target \
    cargo build --release --locked --offline -p centrex \
    && install -D -m 0755 target/release/centrex /out/centrex

FROM ${RUNTIME_BASE} AS base
LABEL org.opencontainers.image.title="centrex" \
      org.opencontainers.image.description="Centrex: a multi-tenant hosted PBX on Kubernetes (operator, signalling, media node)" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric, so that the kubelet can check runAsNonRoot against the image.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/centrex"]

FROM base AS runtime-prebuilt
COPY --chmod=0755 centrex /usr/local/bin/centrex

FROM base AS runtime
COPY --from=build /out/centrex /usr/local/bin/centrex
