"""Starts a roster for a conformance run: on a free loopback port, with a bootstrap admin token."""

import json
import os
import subprocess
import sys
import threading


def show_errors(log) -> None:
    """Echoes the ERROR events of roster's JSON log to standard error, until the log ends."""
    for line in log:
        try:
            level = json.loads(line).get("level")
        except ValueError:
            continue
        if level == "ERROR":
            print(f"roster log: {line.rstrip()}", file=sys.stderr, flush=True)


def start(
    roster: str, database: str, data_dir: str, admin: str, *extra: str
) -> tuple[subprocess.Popen, str]:
    """Roster on `database` (`sqlite` in `data_dir`, or a PostgreSQL URL), and its base URL."""
    args = [roster, "--log-format", "json", "serve", "--listen", "127.0.0.1:0", *extra]
    args += ["--data-dir", data_dir] if database == "sqlite" else ["--database-url", database]
    env = dict(os.environ, ROSTER_BOOTSTRAP_TOKEN=admin, RUST_LOG="roster=info,tower_http=warn")
    env.pop("DATABASE_URL", None)
    server = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    for line in server.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        listen = event.get("fields", {}).get("listen")
        if listen:
            # Keep reading the log so that roster never blocks on a full pipe; its errors are
            # shown, so that a failed check comes with roster's account of it.
            threading.Thread(target=show_errors, args=(server.stdout,), daemon=True).start()
            return server, f"http://{listen}"
    raise SystemExit(f"roster exited with {server.wait()} before it listened")
