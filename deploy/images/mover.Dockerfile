# The mover image, ghcr.io/ferrosync/ferrosync-mover (the controller's mover.image): the
# mover alone (`ferrosync-mover`: no controller, kube client or policy engine, installed as
# /usr/local/bin/ferrosync, the path mover Jobs run; its built-in TLS-PSK tunnel links
# OpenSSL's libssl3) with rsync, and
# stunnel for the TLS_TUNNEL=stunnel fallback, for `ferrosync mover source|destination`. Build
# from the repository root (BuildKit reads mover.Dockerfile.dockerignore next to it, the
# repository's .dockerignore otherwise; either keeps target/ and .git out):
#   docker build -f deploy/images/mover.Dockerfile -t ghcr.io/ferrosync/ferrosync-mover:0.1.0 .
#
# Read-only-root friendly: the mover writes only to /tmp (mount an emptyDir there), to the
# volume at /data, and to the termination-message file the kubelet provides. The key is
# mounted at /keys/psk.txt (Secret, defaultMode 0400 or 0600).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ARG FERROSYNC_GIT_COMMIT=unknown
ENV FERROSYNC_GIT_COMMIT=${FERROSYNC_GIT_COMMIT}
RUN cargo build --release --locked --bin ferrosync-mover

FROM debian:bookworm-slim
# rsync and stunnel4 as Debian ships them today: not pinned to one security update (that
# breaks the build at the next one); the image's sources include bookworm-security. The
# versions resolved are recorded in /usr/share/ferrosync/packages.txt. util-linux
# (setpriv) is essential, so always present.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      rsync \
      stunnel4 \
      libssl3 \
      ca-certificates \
 && mkdir -p /usr/share/ferrosync \
 && dpkg-query -W -f '${Package} ${Version}\n' > /usr/share/ferrosync/packages.txt \
 && rm -rf /var/lib/apt/lists/* \
 && test -x /usr/share/rsync/scripts/munge-symlinks \
 && command -v setpriv \
 && mkdir -p /data /keys /tmp \
 && chmod 1777 /tmp
COPY --from=build /src/target/release/ferrosync-mover /usr/local/bin/ferrosync
# Unprivileged by default; a privileged mover Pod overrides with runAsUser: 0.
USER 65534:65534
ENV DATA_DIR=/data KEY_DIR=/keys TMP_DIR=/tmp
VOLUME ["/tmp", "/data"]
ENTRYPOINT ["/usr/local/bin/ferrosync", "mover"]
CMD ["destination"]
