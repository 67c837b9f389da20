# syntax=docker/dockerfile:1
# The sidecar, built static and run as a non-root user. The same image
# generates the Envoy configuration (`aifirewall envoy-config`).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/aifirewall ./cmd/aifirewall \
 && mkdir -p /out/config /out/spool /out/run

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/aifirewall /usr/local/bin/aifirewall
# An empty /config owned by the runtime user: compose mounts a named volume
# here, which Docker seeds with this ownership, for the generated envoy.yaml.
COPY --from=build --chown=65532:65532 /out/config /config
# The ext_proc Unix socket, in a volume shared with Envoy (compose seeds it
# with this ownership).
COPY --from=build --chown=65532:65532 /out/run /run/aifirewall
# Settlements Redis could not take wait here (fsynced) until it is back;
# compose keeps it on a volume so a restart replays them.
COPY --from=build --chown=65532:65532 /out/spool /var/lib/aifirewall
# No .env in the image: settings come from the environment.
ENV ENV_FILE=/nonexistent \
    SPOOL_FILE=/var/lib/aifirewall/settlements.jsonl
EXPOSE 9090 9091
ENTRYPOINT ["/usr/local/bin/aifirewall"]
