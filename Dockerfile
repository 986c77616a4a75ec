# system-info-collector container image.
#
#   docker build -t system-info-collector .
#
# The base is pinned by tag. To pin it by digest as well (reproducible builds, what CI should do):
#   docker build --build-arg BASE_IMAGE=python:3.12-slim@sha256:<digest> .
# (`docker buildx imagetools inspect python:3.12-slim` prints the digest.) Any Debian-based image
# with python3 >= 3.11 and the venv module works; the builder and rootfs stages use the same
# base, because the virtual environment built in the first runs on the interpreter of the second.
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
# rootfs: the base image minus what a running collector never uses, plus the user and the venv.
# Deleting files in a layer on top of the base would not make the image any smaller, so the
# pruned tree is copied into an empty image below, as a single layer. Removed: documentation,
# man pages and message translations; the base interpreter's pip/setuptools/wheel (the venv does
# not see them) and the bundled wheels; the stdlib parts for developers (ensurepip, idlelib,
# tkinter, turtledemo, lib2to3, test, pydoc_data, distutils) and -O/-OO bytecode. Kept: dpkg's
# database (so image scanners see every OS package), apt, the shell and coreutils (the chart's
# init container runs `chown` from this image), the stdlib bytecode: compiled here if the base
# ships none (python:*-slim deletes it), as the read-only root cannot cache it and every start,
# health checks included, would otherwise compile the imported stdlib again (+0.4 s of CPU).
# Set-user-ID/group-ID bits are removed: nothing in the container may gain privileges.
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS rootfs

SHELL ["/bin/sh", "-eu", "-c"]

COPY --from=builder /opt/venv /opt/venv

# A fixed non-root user; the numbers are what securityContext.runAsUser/fsGroup refer to.
RUN groupadd --gid 10001 sic \
    && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin sic \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0750 /data

RUN python="$(readlink -f /opt/venv/bin/python)"; \
    stdlib="$("$python" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"; \
    sitedirs="$("$python" -c 'import site; print(" ".join(site.getsitepackages()))')"; \
    for dir in $sitedirs; do \
        rm -rf "$dir"/pip "$dir"/pip-* "$dir"/setuptools "$dir"/setuptools-* "$dir"/wheel \
            "$dir"/wheel-* "$dir"/pkg_resources "$dir"/_distutils_hack \
            "$dir"/distutils-precedence.pth; \
    done; \
    rm -rf /usr/local/bin/pip /usr/local/bin/pip3* /usr/bin/pip /usr/bin/pip3* \
        /usr/share/python-wheels; \
    for name in ensurepip idlelib tkinter turtledemo lib2to3 test pydoc_data distutils; do \
        rm -rf "${stdlib:?}/$name"; \
    done; \
    find "$stdlib" -name '*.opt-[12].pyc' -delete; \
    "$python" -m compileall -q -j 0 "$stdlib" >/dev/null || true; \
    rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* \
        /usr/share/lintian /var/lib/apt/lists/* /var/cache/apt/* /var/log/* /root/.cache; \
    find / -xdev -type f -perm /6000 -exec chmod ug-s {} +; \
    /opt/venv/bin/python -c 'import ctypes, gzip, http.server, json, psycopg, psycopg_binary, \
        prometheus_client, environs, loguru, system_info_collector.cli'; \
    /opt/venv/bin/system-info-collector --version

# ---------------------------------------------------------------------------------------------
# runtime: the pruned tree in one layer; no compilers, caches, sources or tests
# ---------------------------------------------------------------------------------------------
FROM scratch

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/system-info-collector/system-info-collector

LABEL org.opencontainers.image.title="system-info-collector" \
      org.opencontainers.image.description="A small, dependable host-metrics agent: CPU, memory, disks and disk I/O to rotated CSV files and PostgreSQL." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

# One layer holding the whole pruned tree is the point of this stage (see rootfs above).
# hadolint ignore=DL3067
COPY --from=rootfs / /

# The host's procfs, sysfs and root filesystem are mounted here (see README: docker run);
# CSV files (and the PostgreSQL spool, in /data/.spool) go to /data.
# (An empty image inherits no environment: PATH and LANG are set in full here.)
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
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
