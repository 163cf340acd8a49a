"""Runs scim2-cli's conformance checks against a roster it starts, on one database.

Usage: python scim-conformance.py ROSTER_BINARY SCIM2_BINARY (sqlite | postgres://…/db)

Roster is started on a free loopback port with a bootstrap admin token; a SCIM token bound to a
fresh source is made through the API; `scim2 --url … --header "Authorization: Bearer …" test`
runs against that source's base URL; roster is stopped. The exit status is scim2's: 0 only when
every check passed.
"""

import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import urllib.request


def start(roster: str, database: str, data_dir: str, admin: str) -> tuple[subprocess.Popen, str]:
    args = [roster, "--log-format", "json", "serve", "--listen", "127.0.0.1:0"]
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
            # Keep reading the log so that roster never blocks on a full pipe.
            threading.Thread(target=server.stdout.read, daemon=True).start()
            return server, f"http://{listen}"
    raise SystemExit(f"roster exited with {server.wait()} before it listened")


def scim_token(base: str, admin: str, source: str) -> str:
    body = json.dumps({"name": f"conformance-{source}", "scopes": ["scim"],
                       "source_system": source}).encode()
    request = urllib.request.Request(f"{base}/api/v1/tokens", data=body, method="POST", headers={
        "Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["secret"]


def main() -> int:
    roster, scim2, database = sys.argv[1:4]
    admin = "conformance-admin-" + secrets.token_hex(16)
    source = "conformance-" + secrets.token_hex(4)
    with tempfile.TemporaryDirectory(prefix="roster-scim2-") as data_dir:
        server, base = start(roster, database, data_dir, admin)
        try:
            token = scim_token(base, admin, source)
            url = f"{base}/scim/v2/{source}"
            print(f"scim2 test against {url} ({database.split('://')[0]})", flush=True)
            return subprocess.run([scim2, "--url", url, "--header",
                                   f"Authorization: Bearer {token}", "test", "-v"],
                                  timeout=600).returncode
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
