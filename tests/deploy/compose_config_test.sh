#!/usr/bin/env bash
# docker-compose.yml validates with Debian's docker-compose (v1), with and
# without the "load" profile, and keeps the properties scaling relies on: no
# container_name, the edge reaching the cloud by service name through DNS.
# Exit 77 (skipped) when docker-compose is not installed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
if ! command -v docker-compose >/dev/null; then
  echo "SKIPPED: docker-compose is not installed (Debian package docker-compose)"
  exit 77
fi
cd "$root"
docker-compose --version
docker-compose -f docker-compose.yml config -q
docker-compose -f docker-compose.yml --profile load config -q
services="$(docker-compose -f docker-compose.yml --profile load config --services | sort | tr '\n' ' ')"
echo "services: $services"
for s in model cloud edge prometheus grafana loadgen; do
  case " $services " in *" $s "*) ;; *) echo "FAILED: service $s missing"; exit 1 ;; esac
done
resolved="$(docker-compose -f docker-compose.yml --profile load config)"
# Plain `up` must not start the load generator: it sits in profile "load".
awk '/^  loadgen:/{s=1;next} /^  [a-z]/{s=0} s' <<<"$resolved" |
  grep -A1 '^    profiles:' | grep -q -- '- load' ||
  { echo "FAILED: loadgen is not in profile load"; exit 1; }
if grep -q 'container_name' <<<"$resolved"; then
  echo "FAILED: container_name set: services cannot be scaled"; exit 1
fi
grep -q 'dns:///cloud:50051' <<<"$resolved" || { echo "FAILED: edge does not use dns:///cloud:50051"; exit 1; }
grep -q -- '--max_connection_age_s' <<<"$resolved" || { echo "FAILED: cloud sets no --max_connection_age_s"; exit 1; }
# With docker_compose_test.py's override (its local Prometheus image) too.
docker-compose -f docker-compose.yml -f tests/deploy/compose.local-prometheus.yml --profile load config -q
echo "PASSED"
