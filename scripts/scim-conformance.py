"""Runs scim2-cli's conformance checks against a roster it starts, on one database.

Usage: python scim-conformance.py ROSTER_BINARY SCIM2_BINARY (sqlite | postgres://…/db)

Roster is started on a free loopback port with a bootstrap admin token; a SCIM token bound to a
fresh source is made through the API; `scim2 --url … --header "Authorization: Bearer …" test`
runs against that source's base URL; roster is stopped. The exit status is scim2's: 0 only when
every check passed.
"""

import json
import secrets
import subprocess
import sys
import tempfile
import urllib.request

from roster_process import start


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
