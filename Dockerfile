# syntax=docker/dockerfile:1.7
#
# better-authz container image.
#
#   docker build -t better-authz:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t ghcr.io/OWNER/better-authz:0.1.0 --push .
#
# Build stage: the toolchain image, `cargo build --release --locked` (the lock file is the
# contract, a drifted Cargo.lock fails the build). Runtime stage: distroless `cc` (glibc,
# libgcc, CA certificates, tzdata; no shell, no package manager), running as the distroless
# `nonroot` user (65532). The binary is linked dynamically against glibc, so the two stages
# must share a Debian release: bookworm here, Debian 12 there.
#
# Linted in CI by hadolint (scripts/validate-k8s.sh).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src

# Only what the build needs (see .dockerignore): the manifest, the lock file and the sources.
COPY . .

# Cache mounts keep the registry and the target dir between builds without putting them in a
# layer; the binary is copied out of the cached target dir before the mount goes away.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
 && install -D -m 0755 target/release/better-authz /out/better-authz

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=https://example.invalid/better-authz

LABEL org.opencontainers.image.title="better-authz" \
      org.opencontainers.image.description="External authorization for Envoy (ext_authz gRPC) and nginx (auth_request) backed by Better Auth sessions" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /out/better-authz /better-authz

# Listen on every interface inside the container (the pod network is the boundary).
# Everything else is configured at run time, by environment only (k8s/base/configmap.yaml,
# charts/better-authz/values.yaml).
ENV AUTHZ_GRPC_ADDR=0.0.0.0:9001 \
    AUTHZ_HTTP_ADDR=0.0.0.0:9002 \
    AUTHZ_ADMIN_ADDR=0.0.0.0:9090

# 9001: gRPC ext_authz (envoy.service.auth.v3.Authorization) + grpc.health.v1
# 9002: HTTP /auth for nginx auth_request / ingress-nginx auth-url
# 9090: admin: /healthz, /readyz, /metrics
EXPOSE 9001 9002 9090

# distroless:nonroot's user, numeric so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532

# SIGTERM: stop accepting, drain in-flight checks within AUTHZ_SHUTDOWN_TIMEOUT_MS, exit 0.
STOPSIGNAL SIGTERM

# There is no shell in this image, so no HEALTHCHECK command can run here; Kubernetes uses
# its own probes on the admin port (/healthz, /readyz) and ignores HEALTHCHECK anyway.
# checkov:skip=CKV_DOCKER_2: no shell or HTTP client in distroless; probes are defined by the orchestrator (k8s/base/deployment.yaml)
ENTRYPOINT ["/better-authz"]
