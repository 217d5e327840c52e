# Veto image: veto, veto-loadgen and veto-bench built in a Rust stage, run on slim Debian.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang libclang-dev cmake libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# the whole workspace (see .dockerignore): benches and tests are workspace targets cargo must see
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p veto -p veto-tools --bins \
 && mkdir -p /out \
 && cp target/release/veto target/release/veto-loadgen target/release/veto-bench /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/veto veto \
 && mkdir -p /var/lib/veto /etc/veto \
 && chown veto /var/lib/veto
COPY --from=build /out/ /usr/local/bin/
COPY rules /etc/veto/rules
COPY deploy/veto.toml /etc/veto/veto.toml
USER veto
WORKDIR /var/lib/veto
EXPOSE 9464
CMD ["veto", "run", "--config", "/etc/veto/veto.toml"]
