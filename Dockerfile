# syntax=docker/dockerfile:1
#
# outbound-scim container image.
#
#   docker build -t outbound-scim:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# Stage 1 builds the service wheel and a wheel of every dependency (pip wheel); stage 2 installs
# them offline (--no-index) into a slim Python, so the final image carries no build tooling, no
# source tree and no pip cache. The image runs as uid 10001 and writes nothing outside /tmp, so it
# runs with a read-only root filesystem (mount an emptyDir on /tmp; the Helm chart does).
# The user state's on-disk copy goes to OUTBOUND_SCIM_STATE_DIR (default: /tmp/outbound-scim-state).
# /var/lib/outbound-scim exists for a volume of its own, writable by uid 10001: the chart mounts an
# emptyDir there and points OUTBOUND_SCIM_STATE_DIR at it (with Docker: -v state:/var/lib/outbound-scim
# -e OUTBOUND_SCIM_STATE_DIR=/var/lib/outbound-scim).
#
# Health: HEALTHCHECK below for plain Docker; on Kubernetes the chart's probes use the same
# endpoints (/healthz liveness, /readyz readiness) on the API port (OUTBOUND_SCIM_API_PORT, 8080).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN python -m pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="outbound-scim" \
      org.opencontainers.image.description="Outbound SCIM 2.0 provisioning for Keycloak realms, driven by Keycloak events on Kafka" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TMPDIR=/tmp \
    OUTBOUND_SCIM_API_PORT=8080

RUN groupadd --system --gid 10001 outbound-scim \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin outbound-scim \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/outbound-scim

# Bind-mount the wheels instead of COPYing them: they never become an image layer.
# --compile writes the .pyc files now, as root, into site-packages; at run time nothing is written.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels --compile outbound-scim \
 && outbound-scim --help > /dev/null

WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OUTBOUND_SCIM_API_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["outbound-scim"]
CMD ["run"]
