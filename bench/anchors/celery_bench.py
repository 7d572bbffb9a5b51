"""Celery + Redis no-op tasks: the anchor VoidRunner's control plane is compared with.

Starts a redis-server of its own (a free port, no persistence: Celery's usual setup) and a Celery
worker (prefork, one process per core), then measures sequential round trips
(`delay().get()`) and throughput (N tasks sent at once, until every result is back). Prints one
JSON document on stdout; progress goes to stderr.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what, within=30.0):
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit(f"{what} did not happen within {within} s")
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--round-trips", type=int, default=500)
    parser.add_argument("--tasks", type=int, default=5000)
    args = parser.parse_args()

    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="celery-anchor-")
    redis = subprocess.Popen(
        [redis_server, "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    env = dict(os.environ, CELERY_ANCHOR_URL=url, PYTHONPATH=HERE)
    concurrency = os.cpu_count() or 1
    worker = None
    try:
        import redis as redis_client

        client = redis_client.Redis.from_url(url)

        def redis_up():
            try:
                return client.ping()
            except Exception:
                return False

        wait_for(redis_up, "redis-server answering")
        os.environ["CELERY_ANCHOR_URL"] = url
        sys.path.insert(0, HERE)
        import celery
        from celery_tasks import noop

        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker",
             "--pool", "prefork", "--concurrency", str(concurrency),
             "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            env=env,
            cwd=HERE,
            stdout=sys.stderr,
            stderr=sys.stderr,
        )

        # The first task waits in the queue until the worker is up.
        noop.delay().get(timeout=60)

        round_trips = []
        for _ in range(args.round_trips):
            began = time.perf_counter()
            noop.delay().get(timeout=30)
            round_trips.append((time.perf_counter() - began) * 1000.0)

        began = time.perf_counter()
        pending = [noop.delay() for _ in range(args.tasks)]
        for result in pending:
            result.get(timeout=120)
        per_second = args.tasks / (time.perf_counter() - began)

        json.dump(
            {
                "celery": celery.__version__,
                "concurrency": concurrency,
                "round_trips_ms": round_trips,
                "per_second": per_second,
            },
            sys.stdout,
        )
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        redis.terminate()
        redis.wait(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # Celery's result objects try to reach the (stopped) Redis when collected at exit.
    os._exit(0)
