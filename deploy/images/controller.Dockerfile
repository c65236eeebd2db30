# The controller image, ghcr.io/ferrosync/ferrosync (deploy/ and the Helm chart run it):
# the ferrosync binary without rsync and stunnel (the controller never moves data). Build
# from the repository root (.dockerignore keeps target/ and .git out of the context):
#   docker build -f deploy/images/controller.Dockerfile -t ghcr.io/ferrosync/ferrosync:0.1.0 .
#
# Read-only-root friendly: the controller writes nothing to disk. Its configuration is a
# ConfigMap mounted at /etc/ferrosync, policy bundles are ConfigMaps mounted under
# /etc/ferrosync-policies; the /metrics certificate is generated in memory or mounted.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# No .git in the context: build.rs falls back to FERROSYNC_GIT_COMMIT if given.
ARG FERROSYNC_GIT_COMMIT=unknown
ENV FERROSYNC_GIT_COMMIT=${FERROSYNC_GIT_COMMIT}
RUN cargo build --release --locked --bin ferrosync

FROM debian:bookworm-slim
# Not pinned to exact versions: a pin to one security update breaks the build at Debian's
# next one. The image's sources include bookworm-security, so each build takes the current
# fixes; the versions it got are recorded in the image.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && mkdir -p /usr/share/ferrosync \
 && dpkg-query -W -f '${Package} ${Version}\n' > /usr/share/ferrosync/packages.txt \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ferrosync /usr/local/bin/ferrosync
USER 65532:65532
# 8080: /healthz and /readyz (plain HTTP); 8443: /metrics (HTTPS, authenticated).
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/ferrosync"]
CMD ["controller"]
