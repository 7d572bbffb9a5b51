"""The Celery app of the anchor: one no-op task, Redis as broker and result backend."""

import os

from celery import Celery

app = Celery(
    "anchor",
    broker=os.environ["CELERY_ANCHOR_URL"],
    backend=os.environ["CELERY_ANCHOR_URL"],
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=4,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
)


@app.task
def noop():
    return None
