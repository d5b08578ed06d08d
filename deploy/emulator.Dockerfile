# emulator.Dockerfile - the Duo emulator (tests/emulator, Python standard library only)
# for the compose profile "emulator". Build from the repository root:
#   docker build -f deploy/emulator.Dockerfile -t duo-emulator .
# Key invariant: nothing here is for production; it stands in for Duo in tests and demos.
FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 openssl curl \
 && rm -rf /var/lib/apt/lists/*
COPY tests/emulator/*.py /opt/duo-emulator/
COPY deploy/emulator-entrypoint.sh /opt/duo-emulator/entrypoint.sh
# Runs as root on purpose: the certificate volume may already exist, created empty and
# root-owned by a worker container that mounts it read-only.
EXPOSE 8443
VOLUME ["/certs"]
ENTRYPOINT ["/opt/duo-emulator/entrypoint.sh"]
