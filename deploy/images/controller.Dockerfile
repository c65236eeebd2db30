# The controller image: the same ferrosync binary as the mover image, without rsync and
# stunnel (the controller never moves data). Build from the repository root:
#   docker build -f deploy/images/controller.Dockerfile -t ferrosync-controller .
#
# Read-only-root friendly: the controller writes nothing to disk. Its configuration is a
# ConfigMap mounted at /etc/ferrosync (deploy/), policy bundles are ConfigMaps mounted
# under /etc/ferrosync-policies (deploy/policies/).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ferrosync

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ferrosync /usr/local/bin/ferrosync
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ferrosync"]
CMD ["controller"]
