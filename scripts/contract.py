"""Runs schemathesis against a roster it starts, on one database, with every check.

Usage: python contract.py ROSTER_BINARY SCHEMATHESIS_BINARY (sqlite | postgres://…/db)

Roster is started on a free loopback port with a bootstrap admin token (event streams end after
2 s, so that reading one does not hold the run); schemathesis reads /openapi.json and tests every
operation with that token, with the settings and the narrowed checks of
scripts/contract/schemathesis.toml, a bounded number of examples per operation and a fixed seed
(about 2 to 3 minutes a backend); roster is stopped. The exit status is schemathesis's: 0 only when no check failed.
"""

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from roster_process import start

# Examples per operation and phase (with the fixed seed, the same run each time), and the
# longest the run may take, in seconds.
EXAMPLES = 30
SEED = 1
MAX_SECONDS = 900


def main() -> int:
    roster, schemathesis, database = sys.argv[1:4]
    admin = "contract-admin-" + secrets.token_hex(16)
    settings = Path(__file__).resolve().parent / "contract"
    with tempfile.TemporaryDirectory(prefix="roster-contract-") as data_dir:
        server, base = start(roster, database, data_dir, admin, "--stream-lifetime", "2")
        try:
            print(f"schemathesis against {base} ({database.split('://')[0]})", flush=True)
            env = dict(os.environ, PYTHONPATH=str(settings), SCHEMATHESIS_HOOKS="hooks")
            return subprocess.run(
                [schemathesis, "--config-file", str(settings / "schemathesis.toml"), "run",
                 f"{base}/openapi.json", "--header", f"Authorization: Bearer {admin}",
                 "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "1",
                 "--no-color"],
                env=env, timeout=MAX_SECONDS).returncode
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
