# discoverd container image.
#
# The binaries are built on the host (the Docker engines this runs on cannot
# pull images, so there is no golang build stage) and copied into an empty
# image. Build both with `make image` (or `make cluster-up`), which runs:
#
#   CGO_ENABLED=0 go build -ldflags "-X github.com/discoverd/discoverd/internal/version.Version=$(git describe --tags --always --dirty)" \
#     -o bin/docker/discoverd ./cmd/discoverd
#   CGO_ENABLED=0 go build -o bin/docker/healthcheck ./docker/healthcheck
#   docker build -t discoverd:latest .
#
# No CA certificates or time zone data are needed: discoverd speaks plain
# HTTP, Raft and NATS, and logs in UTC.
FROM scratch

# The version baked into the binary, recorded on the image too:
# docker build --build-arg VERSION=... (scripts/cluster.sh passes it).
ARG VERSION=devel
LABEL org.opencontainers.image.version=$VERSION

COPY bin/docker/discoverd /discoverd
COPY bin/docker/healthcheck /healthcheck

# Listen on every interface of the container; --advertise and --peers
# (DISCOVERD_ADVERTISE, DISCOVERD_PEERS) say how the other nodes reach it.
ENV DISCOVERD_DATA_DIR=/data \
    DISCOVERD_ADDR=0.0.0.0:1111 \
    DISCOVERD_NATS_ADDR=0.0.0.0:4222 \
    DISCOVERD_LOG_FORMAT=json

VOLUME /data
# 1111: HTTP API and Raft; 4222: NATS clients; 6222: NATS routes between
# voters; 7422: NATS leafnodes of proxies.
EXPOSE 1111 4222 6222 7422

HEALTHCHECK --interval=2s --timeout=3s --start-period=5s --retries=3 CMD ["/healthcheck", "/ping"]

ENTRYPOINT ["/discoverd"]
