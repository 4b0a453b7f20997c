# syntax=docker/dockerfile:1
# The rivulet server as an image; `docker compose up` (docker-compose.yml) builds and starts it with
# Apache Kafka and a producer of sample bids, and deploy/kubernetes/ runs it on Kubernetes.
# sql-tests/tests/docker_compose.rs and kubernetes.rs check that this file, the compose file, the
# manifests and the binary's flags agree.

# Builder: the same Debian release as the runtime, so that the librocksdb the binary links (7.8,
# dynamically, see .cargo/config.toml) is the one the runtime installs. librdkafka is built from
# source by rdkafka's cmake-build feature (it needs cmake and the curl headers).
FROM rust:1.94-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        librocksdb-dev libsnappy-dev libclang-dev cmake libcurl4-openssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .cargo/config.toml names x86_64's library directory; the compiler's multiarch triple also fits an
# arm64 host. The cache mounts keep crates and the target dir between builds, so the binary is copied
# out of the target dir within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    lib="/usr/lib/$(gcc -print-multiarch)" \
    && ROCKSDB_LIB_DIR="$lib" SNAPPY_LIB_DIR="$lib" cargo build --release --locked -p rivulet \
    && cp target/release/rivulet /usr/local/bin/rivulet

# Runtime: the binary links librocksdb, zlib, libgcc and libc (ldd); librocksdb7.8 brings the rest
# (snappy, lz4, zstd, bz2, gflags, libstdc++). librdkafka is linked statically, without curl or TLS.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends librocksdb7.8 libsnappy1v5 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rivulet \
    && useradd --system --uid 10001 --gid rivulet --home-dir /data rivulet \
    && mkdir /data \
    && chown rivulet /data
COPY --from=builder /usr/local/bin/rivulet /usr/local/bin/rivulet
USER rivulet
VOLUME /data
# Postgres clients, and the HTTP endpoint (/metrics, /health, /ready, the dashboard), which listens
# on loopback unless RIVULET_HTTP_LISTEN says otherwise (docker-compose.yml and the manifests do).
EXPOSE 4566 9250
# A non-loopback address needs a password: the server refuses to start without RIVULET_PASSWORD.
CMD ["rivulet", "--listen", "0.0.0.0:4566", "--data-dir", "/data"]
