# syntax=docker/dockerfile:1.7
# One image for every role: `sqi ingest|process|batch|report|demo`.
#
#   docker buildx build -t ghcr.io/sqi-engine/sqi:dev .
#
# The build stage compiles the locked release binary; BuildKit cache mounts
# keep the registry and the target directory between builds, so a change to
# the project's own code rebuilds only its crates (the reason PostHog uses
# cargo-chef; cache mounts do the same without another tool).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sqi \
 && install -D -m 0755 target/release/sqi /out/sqi

# distroless/cc: glibc, libgcc, CA certificates and tzdata; no shell, no
# package manager. The binary links nothing else (tests/tests/deploy.rs checks).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="sqi" \
      org.opencontainers.image.description="SQI Engine: social-share analytics, one binary for every role" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/sqi /usr/local/bin/sqi
# The widget and dashboard are compiled into the binary, which serves them;
# the files are here too for a CDN to be filled from the image.
COPY ingest/assets/widget.js /usr/share/sqi/widget/widget.js
COPY sqi/report/dashboard /usr/share/sqi/dashboard
# The `nonroot` user of distroless, by number so that runAsNonRoot can verify it.
# mimalloc (sqi's allocator) commits its arenas eagerly on Linux by default
# and then keeps a burst's pages resident: a warm ingest sat at 39 MiB
# instead of 26, and two bursts of 256 connections left 14 MiB behind after
# they closed (4.5 MiB committing on demand); the batch spent three times the
# system time with eager commit. It reads this before main runs, so it is set
# here and not in code (BENCHMARKS.md, soak and batch).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0
USER 65532:65532
# ingest, report, processor admin (each role's default SQI_LISTEN).
EXPOSE 8080 8081 9090
ENTRYPOINT ["/usr/local/bin/sqi"]
CMD ["--help"]
