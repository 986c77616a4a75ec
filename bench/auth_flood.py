"""What a client guessing basic-auth passwords costs the collector, and whether scrapes go on.

    .venv/bin/python bench/auth_flood.py [--seconds 20] [--clients 4] [--cost 10]
    .venv/bin/python bench/auth_flood.py --src new=src --src old=/tmp/wt-old/src  # side by side

Starts one ``system-info-collector run`` per ``--src NAME=DIR`` (``PYTHONPATH=DIR``, so another
checkout can run next to this one; default: this checkout), each with ``/metrics`` behind basic
auth (a users file with one bcrypt hash of ``--cost``) over plain HTTP on 127.0.0.1, CSV sink
only. Then, against each at once, ``--clients`` threads send ``GET /metrics`` with a new wrong
password each time, and one scraper with the right password every second, for ``--seconds``.
Prints per collector: its CPU (utime + stime over the window, % of one core), the answers the
guessing clients got (401: checked and wrong; 429: refused unchecked), and the scraper's answers.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import bcrypt
from rss_smaps import Proc  # bench/rss_smaps.py
from run import cpu_seconds, free_port  # bench/run.py
from scale import collector_env, stop

EXE = Path(sys.executable).with_name("system-info-collector")
HERE = Path(__file__).resolve().parent
PASSWORD = "right-password"


def get(port: int, password: str) -> int:
    token = base64.b64encode(f"prometheus:{password}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Basic {token}"})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0  # refused or cut: counted as such
    finally:
        conn.close()


def ready(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if get(port, PASSWORD) == 200:
            return
        time.sleep(0.2)
    raise SystemExit(f"the collector on port {port} did not answer 200 in time")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--cost", type=int, default=10)
    ap.add_argument("--src", action="append", default=[], help="NAME=DIR (repeatable)")
    args = ap.parse_args()
    sources = dict(s.split("=", 1) for s in args.src) or {"this": str(HERE.parent / "src")}
    base = Path(tempfile.mkdtemp(prefix="sic-auth-flood-"))
    users = base / "users"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(args.cost)).decode()
    users.write_text(f"prometheus:{hashed}\n")
    procs: dict[str, Proc] = {}
    ports: dict[str, int] = {}
    try:
        for name, src in sources.items():
            port = free_port()
            env = collector_env(
                SIC_INTERVAL="1s",
                SIC_SINKS="csv",
                SIC_CSV_DIR=str(base / f"csv-{name}"),
                SIC_HTTP_LISTEN=f"127.0.0.1:{port}",
                SIC_HTTP_BASIC_AUTH_FILE=str(users),
                PYTHONPATH=os.path.abspath(src),
            )
            popen = subprocess.Popen([str(EXE), "run"], env=env, stdout=subprocess.DEVNULL)
            procs[name], ports[name] = Proc(name, popen), port
        for port in ports.values():
            ready(port, time.monotonic() + 30)
        guesses = {name: Counter[int]() for name in procs}
        scrapes = {name: Counter[int]() for name in procs}
        done = threading.Event()

        def guess(name: str, port: int, client: int) -> None:
            n = 0
            while not done.is_set():
                guesses[name][get(port, f"guess-{client}-{n}")] += 1
                n += 1

        def scrape(name: str, port: int) -> None:
            while not done.wait(1.0):
                scrapes[name][get(port, PASSWORD)] += 1

        threads = [
            threading.Thread(target=guess, args=(name, port, c), daemon=True)
            for name, port in ports.items()
            for c in range(args.clients)
        ]
        threads += [
            threading.Thread(target=scrape, args=(name, port), daemon=True)
            for name, port in ports.items()
        ]
        cpu0 = {name: cpu_seconds(p.popen.pid) for name, p in procs.items()}
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        cpu = {
            name: 100 * (cpu_seconds(p.popen.pid) - cpu0[name]) / (time.monotonic() - t0)
            for name, p in procs.items()
        }
        done.set()
        for t in threads:
            t.join(35)
    finally:
        stop(list(procs.values()))  # type: ignore[arg-type]
    print(
        f"{args.clients} clients guessing, one scraper a second, {args.seconds:g} s, "
        f"bcrypt cost {args.cost}"
    )
    print("| collector | CPU % of one core | guesses 401 | 429 | other | scrapes 200 | other |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in procs:
        g, s = guesses[name], scrapes[name]
        print(
            f"| {name} | {cpu[name]:.1f} | {g[401]} | {g[429]} | "
            f"{sum(v for k, v in g.items() if k not in (401, 429))} | {s[200]} | "
            f"{sum(v for k, v in s.items() if k != 200)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
