#!/usr/bin/env python3
"""Checks VoidRunner's wire contract from outside, with nats-py (not the project's own client).

Subscribes to every subject under a prefix, prints "ready" once subscribed, captures until its
stdin closes, then validates each payload against the JSON Schema in nats/schemas/ that its
subject names, checks the headers, and prints a JSON summary on stdout.

usage: wire_check.py NATS_URL PREFIX SCHEMA_DIR
"""

import asyncio
import json
import pathlib
import sys

import jsonschema
import nats

SCHEMA_BY_KIND = {
    "tasks": "dispatch.json",
    "events": "execution-event.json",
    "results": "result.json",
    "dlq": "dead-letter.json",
}
# Headers-only wake-up copies and service requests carry no event payload.
UNCHECKED_KINDS = {"wakeup", "workers"}


async def main(url: str, prefix: str, schema_dir: pathlib.Path) -> None:
    validators = {
        name: jsonschema.Draft7Validator(json.loads((schema_dir / name).read_text()))
        for name in set(SCHEMA_BY_KIND.values())
    }
    client = await nats.connect(url)
    captured = []

    async def on_message(message):
        captured.append((message.subject, message.data, dict(message.headers or {})))

    await client.subscribe(prefix + ".>", cb=on_message)
    await client.flush()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    # A PING/PONG round trip: everything published before it has been delivered after it.
    await client.flush()
    await client.drain()

    counts: dict[str, int] = {}
    errors: list[str] = []
    for subject, data, headers in captured:
        kind = subject.split(".")[1]
        if kind in UNCHECKED_KINDS:
            continue
        schema = SCHEMA_BY_KIND.get(kind)
        if schema is None:
            errors.append(f"{subject}: subject outside the contract")
            continue
        try:
            payload = json.loads(data)
        except ValueError as error:
            errors.append(f"{subject}: not JSON: {error}")
            continue
        for problem in validators[schema].iter_errors(payload):
            errors.append(f"{subject}: {problem.message}")
        execution_id = headers.get("Voidrunner-Execution-Id")
        if not headers.get("Nats-Msg-Id"):
            errors.append(f"{subject}: no Nats-Msg-Id header")
        expected_id = payload.get("execution_id") or payload.get("dispatch", {}).get("execution_id")
        if execution_id is None or execution_id != expected_id:
            errors.append(f"{subject}: Voidrunner-Execution-Id header {execution_id!r} is not {expected_id!r}")
        name = payload.get("schema", "?")
        counts[name] = counts.get(name, 0) + 1
    print(json.dumps({"counts": counts, "errors": errors}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])))
