# The mover image: the ferrosync binary (with its built-in TLS-PSK tunnel, linked to
# OpenSSL's libssl3) with rsync, and stunnel for the TLS_TUNNEL=stunnel fallback, for
# `ferrosync mover source|destination`. Build from the repository root:
#   docker build -f deploy/images/mover.Dockerfile -t ferrosync-mover .
# (BuildKit reads mover.Dockerfile.dockerignore next to it: target/ and .git stay out.)
#
# Read-only-root friendly: the mover writes only to /tmp (mount an emptyDir there), to the
# volume at /data, and to the termination-message file the kubelet provides. The key is
# mounted at /keys/psk.txt (Secret, defaultMode 0400 or 0600).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ferrosync

FROM debian:bookworm-slim
# Pinned: the data-plane tests ran against exactly these (rsync from bookworm-security).
RUN echo 'deb http://deb.debian.org/debian-security bookworm-security main' \
      > /etc/apt/sources.list.d/security.list \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      rsync=3.5.0+ds1-0+deb12u1 \
      stunnel4=3:5.68-2+deb12u1 \
      libssl3 \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && test -x /usr/share/rsync/scripts/munge-symlinks \
 && mkdir -p /data /keys /tmp \
 && chmod 1777 /tmp
COPY --from=build /src/target/release/ferrosync /usr/local/bin/ferrosync
# Unprivileged by default; a privileged mover Pod overrides with runAsUser: 0.
USER 65534:65534
ENV DATA_DIR=/data KEY_DIR=/keys TMP_DIR=/tmp
VOLUME ["/tmp", "/data"]
ENTRYPOINT ["/usr/local/bin/ferrosync", "mover"]
CMD ["destination"]
