"""Schemathesis hooks for roster's contract run: how to send an NDJSON body (a chunk upload)."""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    """One JSON value a line: a list is its lines, anything else one line."""
    lines = value if isinstance(value, list) else [value]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()
