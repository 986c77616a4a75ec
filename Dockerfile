# system-info-collector container image.
#
#   docker build -t system-info-collector .
#
# The base is pinned by tag. To pin it by digest as well (reproducible builds, what CI should do):
#   docker build --build-arg BASE_IMAGE=python:3.12-slim@sha256:<digest> .
# (`docker buildx imagetools inspect python:3.12-slim` prints the digest.) Any Debian-based image
# with python3 >= 3.11 and the venv module works; both stages must use the same base, because the
# virtual environment built in the first is copied into the second.
#
# pip inside the build uses the base image's configuration (/etc/pip.conf, if any) plus these
# optional build arguments, e.g. for a private index or a proxy:
#   --build-arg PIP_INDEX_URL=... --build-arg PIP_EXTRA_INDEX_URL=... --build-arg PIP_CERT=...

ARG BASE_IMAGE=python:3.12-slim

# ---------------------------------------------------------------------------------------------
# builder: build the wheel and install it with its dependencies into /opt/venv
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/sh", "-eu", "-c"]

RUN python3 -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.m[d] ./
COPY src ./src

# `pip wheel` builds in an isolated environment (setuptools from the index); the venv then gets
# the wheel and its dependencies only, without pip/setuptools, and its bytecode compiled once
# (the runtime root filesystem is read-only).
RUN /opt/venv/bin/python -m pip wheel --no-deps --wheel-dir /tmp/wheels . ; \
    /opt/venv/bin/python -m pip install /tmp/wheels/*.whl ; \
    /opt/venv/bin/python -m pip uninstall --yes pip setuptools wheel >/dev/null 2>&1 || true; \
    /opt/venv/bin/python -m compileall -q -j 0 /opt/venv >/dev/null; \
    /opt/venv/bin/system-info-collector --version

# ---------------------------------------------------------------------------------------------
# runtime: the base image plus /opt/venv; no compilers, caches, sources or tests
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/system-info-collector/system-info-collector

LABEL org.opencontainers.image.title="system-info-collector" \
      org.opencontainers.image.description="A small, dependable host-metrics agent: CPU, memory, disks and disk I/O to rotated CSV files and PostgreSQL." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed non-root user; the numbers are what securityContext.runAsUser/fsGroup refer to.
RUN groupadd --gid 10001 sic \
    && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin sic \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0750 /data

COPY --from=builder /opt/venv /opt/venv

# The host's procfs, sysfs and root filesystem are mounted here (see README: docker run);
# CSV files (and the PostgreSQL spool, in /data/.spool) go to /data.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SIC_HOST_PROC=/host/proc \
    SIC_HOST_SYS=/host/sys \
    SIC_HOST_ROOT=/host/root \
    SIC_CSV_DIR=/data

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9808

# Asks the running collector (GET /healthz on SIC_HTTP_LISTEN); it does not sample the host.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["system-info-collector", "health"]

# SIGTERM (docker stop) flushes every sink within SIC_SHUTDOWN_TIMEOUT (10s); keep docker's
# stop timeout above it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["system-info-collector"]
CMD ["run"]
