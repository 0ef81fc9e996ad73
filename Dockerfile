# syntax=docker/dockerfile:1
# voicefsm in a container: non-root, slim, with espeak-ng for the offline voice and a health check.
#   docker build -t voicefsm .
#   docker run --env-file .env -p 127.0.0.1:8080:8080 -v voicefsm-data:/data voicefsm serve /app/flows/booking.py
# Put a TLS proxy in front (compose.yaml, docs/deploy.md); the server itself speaks plain HTTP.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler only in this stage, for any dependency without a wheel for this platform.
# Debian's security updates replace exact versions, so apt packages are not pinned (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/voicefsm
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY voicefsm ./voicefsm
# otel: traces exported when OTEL_EXPORTER_OTLP_ENDPOINT is set (docs/deploy.md, Observability)
RUN /opt/voicefsm/bin/pip install ".[postgres,otel]"

FROM python:${PYTHON_VERSION}-slim-bookworm
# espeak-ng: the local voice (the espeakng-loader wheel carries the library too; this is the fallback).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 voicefsm \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin voicefsm \
    && mkdir -p /data/recordings \
    && chown -R voicefsm:voicefsm /data
COPY --from=build /opt/voicefsm /opt/voicefsm
COPY flows /app/flows
ENV PATH=/opt/voicefsm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VOICEFSM_HOST=0.0.0.0 \
    VOICEFSM_PORT=8080 \
    VOICEFSM_RECORDINGS_DIR=/data/recordings \
    VOICEFSM_DB_URL=sqlite+aiosqlite:////data/voicefsm.db
WORKDIR /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
# Liveness: /healthz is open (no data in it). Python is there; curl is not.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VOICEFSM_PORT', '8080'), timeout=4)"]
# SIGTERM drains: live calls may finish for VOICEFSM_DRAIN_TIMEOUT_S (20 s); the process exits within 25 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["voicefsm"]
CMD ["serve", "/app/flows/booking.py"]
