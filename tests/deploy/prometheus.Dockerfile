# Prometheus for docker_compose_test.py, where prom/prometheus cannot be
# pulled: Debian's prometheus package on the same Debian 12 base as the duet
# image, run as prom/prometheus runs (the server as entrypoint, so the compose
# file's command works unchanged; data in /prometheus; not root).
#   docker build --build-arg DEBIAN_IMAGE=duet-debian:bookworm -t IMAGE - <tests/deploy/prometheus.Dockerfile
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      prometheus \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && install -d -o prometheus -g prometheus /prometheus
USER prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
