# switchboard in a container: a multi-stage build (Rust toolchain only in the
# first stage) and a small Debian runtime that runs as an unprivileged user.
#
#   docker build -t switchboard .
#   docker run --rm --network host switchboard serve --external-ip PUBLIC_IP
#
# Ports (docs/deploy.md, "Docker"): 8080/tcp HTTP and WebSocket, 3478/udp
# and 3478/tcp STUN/TURN, and the relay ports (--relay-ports, UDP;
# 49152-65535 by default). Publishing sixteen thousand ports through
# docker's proxy is slow: use --network host, or narrow --relay-ports and
# publish that range. Behind docker's NAT, --external-ip must be the
# address clients reach, or relay candidates point into the container.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep the registry and the target dir between builds on one
# machine; the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p switchboard \
    && cp target/release/switchboard /usr/local/bin/switchboard

FROM debian:bookworm-slim
# ca-certificates: the system roots `switchboard doctor` and the CLI verify
# https:// and turns: against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin switchboard
COPY --from=build /usr/local/bin/switchboard /usr/local/bin/switchboard
USER 10001:10001
EXPOSE 8080/tcp 3478/udp 3478/tcp
ENTRYPOINT ["switchboard"]
CMD ["serve"]
