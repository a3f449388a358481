"""Runs the local Prefect server and stops it after an idle time, so that none lingers.

    python -m flows.server.watchdog RUN_DIR PORT IDLE_SECONDS

`flows.server.local_server` starts this process as the leader of a new process group; it starts
`prefect server start` in the same group, so `mmpipe server stop` (a signal to the group) stops
both. Every few seconds it asks whether the server is in use. It is, while

- an `mmpipe` command holds its shared lock on `prefect-server.users` (the lock goes away with
  the process, so a killed command does not keep the server forever), or
- the server recorded any event (a flow or task run changing state, a heartbeat, a deployment
  run) within the idle time, which covers clients that are not `mmpipe`.

Idle time counts from the latest of these and the last `mmpipe` use (the file's mtime). When it
has passed, the watchdog takes the server lock (so no command can start using the server in
between), removes the record and stops the server. IDLE_SECONDS 0 means never.

Standard library, filelock and psutil only (`mmcore/io`): it stays small next to the server it
watches.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flows.server import local_server
from mmcore.io import locks

STOP_GRACE_S = 10


def log(message: str) -> None:
    print(f"{datetime.now().isoformat(timespec='seconds')} mmpipe watchdog: {message}",
          flush=True)


def users_active(run_dir: Path) -> bool:
    """Some process holds a shared lock on the users file (an `mmpipe` command running)."""
    with locks.try_exclusive(local_server.users_path(run_dir)) as free:
        return not free


def last_use(run_dir: Path) -> float:
    try:
        return local_server.users_path(run_dir).stat().st_mtime
    except OSError:
        return 0.0


def recent_events(api_url: str, window_s: float) -> bool:
    """The server recorded an event within the window (True when it cannot tell: never stop a
    server because it was slow to answer)."""
    since = datetime.now(UTC) - timedelta(seconds=window_s)
    body = json.dumps({"filter": {"occurred": {"since": since.isoformat()}}, "limit": 1})
    request = urllib.request.Request(f"{api_url}/events/filter", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response).get("total", 1) > 0
    except (OSError, ValueError):
        return True


def poll_interval(idle_s: float) -> float:
    return min(30.0, max(0.5, idle_s / 6))


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def forget(run_dir: Path) -> None:
    """Remove the record if it still names this watchdog (the caller holds the server lock)."""
    info = local_server.recorded(run_dir)
    if info and info.get("pid") == os.getpid():
        local_server.info_path(run_dir).unlink(missing_ok=True)


def watch(run_dir: Path, server: subprocess.Popen, api_url: str, idle_s: float) -> int:
    """Return the exit code once the server stopped (idle, or on its own)."""
    interval = poll_interval(idle_s)
    while not local_server.healthy(api_url) and server.poll() is None:
        time.sleep(0.25)  # the idle time counts from when the server answers
    last_busy = time.time()
    while True:
        time.sleep(interval)
        if server.poll() is not None:
            with local_server.server_lock(run_dir):
                forget(run_dir)
            log(f"the server exited with code {server.returncode}")
            return server.returncode or 0
        if idle_s <= 0:
            continue
        if users_active(run_dir):
            last_busy = time.time()
            continue
        if time.time() - max(last_busy, last_use(run_dir)) < idle_s:
            continue
        if recent_events(api_url, idle_s):
            last_busy = time.time() - idle_s + interval  # look again at the next poll
            continue
        with local_server.server_lock(run_dir):
            # A command may have started using the server while we waited for the lock.
            if users_active(run_dir) or time.time() - last_use(run_dir) < idle_s:
                last_busy = time.time()
                continue
            forget(run_dir)
            log(f"no use for {idle_s / 60:g} min: stopping the server "
                f"({local_server.IDLE_ENV} sets the idle time)")
            stop_server(server)
        return 0


def main(argv: list[str]) -> int:
    run_dir, port, idle_s = Path(argv[0]), int(argv[1]), float(argv[2])
    prefect = Path(sys.executable).with_name("prefect")
    server = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL,
    )
    # `mmpipe server stop` signals the whole group; stop the server in an orderly way too.
    signal.signal(signal.SIGTERM, lambda *_: (stop_server(server), sys.exit(0)))
    with contextlib.suppress(KeyboardInterrupt):
        return watch(run_dir, server, f"http://127.0.0.1:{port}/api", idle_s)
    stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
