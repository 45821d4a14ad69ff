# Scrambled Eggs as a static container image, set up for the Matrix conformance suite
# (Complement, github.com/matrix-org/complement):
#
#   docker build -t complement-eggs .
#   COMPLEMENT_BASE_IMAGE=complement-eggs go test ./tests/...      # in a Complement checkout
#
# Complement's contract: the server name comes from SERVER_NAME; the client API listens on
# 8008 (HTTP) and the federation API on 8448 (HTTPS); when /complement/ca/ca.crt and ca.key
# exist, the federation certificate is issued from that CA at start-up and the CA is trusted
# for outbound federation (config: EGGS_COMPLEMENT_CA_DIR). Registration is open
# (m.login.dummy) and the shared secret of /_synapse/admin/v1/register is "complement".
# Outside Complement, set EGGS_* variables (see README.md) to override any of this.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=docker
# The SQLite driver needs cgo; linking statically gives a binary that runs on an image
# without a C library. netgo and osusergo keep the resolver and user lookups in Go, so that
# glibc's NSS (which cannot be linked statically) is never called; sqlite_omit_load_extension
# drops dlopen for the same reason.
RUN CGO_ENABLED=1 go build -trimpath \
        -tags sqlite_omit_load_extension,netgo,osusergo \
        -ldflags "-s -w -X main.version=${VERSION} -extldflags '-static'" \
        -o /out/eggs ./cmd/eggs \
    && mkdir -p /out/data

# distroless/static: CA certificates and time zones, no shell, no libc. It runs as root so
# that the CA key Complement mounts is readable whatever its owner and mode.
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/eggs /usr/local/bin/eggs
COPY --from=build /out/data /data
ENV EGGS_DATA_DIR=/data \
    EGGS_CLIENT_ADDR=:8008 \
    EGGS_FEDERATION_ADDR=:8448 \
    EGGS_REGISTRATION=open \
    EGGS_REGISTRATION_SHARED_SECRET=complement \
    EGGS_RATE_LIMIT=off
EXPOSE 8008 8448
ENTRYPOINT ["/usr/local/bin/eggs", "serve"]
