# syntax=docker/dockerfile:1
# The flowpilot image: one binary, every subcommand (`api`, `worker`,
# `controller`, `migrate`, ...), run as a non-root user.
#
#   docker build -t flowpilot .
#   docker run --rm flowpilot --help

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The lock file is the one tested; the caches only speed up rebuilds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin flowpilot \
    && cp target/release/flowpilot /flowpilot

# glibc as in the build stage, CA certificates for TLS, no shell, uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /flowpilot /usr/local/bin/flowpilot
USER nonroot:nonroot
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/flowpilot"]
