# Dockerfile - one image for the three workers (duo-enroll, duo-auth, duo-import) and
# duoctl. Build stage compiles on debian:12 with the -dev packages and installs into
# /opt/duo-workers; the runtime stage holds only the shared libraries, that prefix and
# curl (for the compose health check). Key invariant: the install prefix is the same
# in both stages, because the binaries find migrations and schemas through the
# compiled-in <prefix>/share/duo-workers.
#   docker build -t duo-workers .
#   docker run --rm --env-file deploy/env.example duo-workers duoctl migrate

FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      librabbitmq-dev libcurl4-openssl-dev libssl-dev libmsgpack-dev libpq-dev \
      libjansson-dev libyajl-dev libmicrohttpd-dev libcmocka-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads (the top-level CMakeLists.txt also configures tests/ and
# bench/, so they come along; .dockerignore keeps build dirs and .run/ out).
COPY CMakeLists.txt ./
COPY common/ common/
COPY workers/ workers/
COPY tools/ tools/
COPY bench/ bench/
COPY tests/ tests/
COPY migrations/ migrations/
COPY schemas/ schemas/
COPY deploy/ deploy/
# Only the installed programs are built (duoctl and one duo-<name> per workers/<name>
# folder with sources): tests and benchmarks are not shipped and need not compile at -O2.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/opt/duo-workers \
 && targets="duoctl" \
 && for d in workers/*/; do \
      if ls "$d"*.c >/dev/null 2>&1; then targets="$targets duo-$(basename "$d")"; fi; \
    done \
 && cmake --build /build -j"$(nproc)" --target $targets \
 && cmake --install /build --strip

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librabbitmq4 libcurl4 libssl3 libmsgpackc2 libpq5 libjansson4 libyajl2 libmicrohttpd12 \
      ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin duo
COPY --from=build /opt/duo-workers /opt/duo-workers
ENV PATH=/opt/duo-workers/bin:$PATH
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# Workers drain in-flight jobs on SIGTERM for SHUTDOWN_GRACE_MS (default 30 s): give
# them longer than that before SIGKILL (compose: stop_grace_period; k8s:
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
CMD ["duoctl", "config-doc"]
