"""The Celery app the test process publishes through (``dispatch.app`` in the tests'
config): only a broker connection, to the Redis of the test that imported it."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("producer", broker=os.environ["BROKER_URL"])
