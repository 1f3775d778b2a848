"""django.tasks (the ``django-tasks`` backport, its database backend): a message sent
inside ``transaction.atomic()`` that rolls back stores and publishes nothing; a committed
one is published once the transaction commits and delivered by the backend's worker
(``manage.py db_worker``), once, even when its task runs again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mailer.testing import SMTPTestServer

from .conftest import ROOT, rows, write_config

SCRIPT = """
import json, django
django.setup()
from django.core.mail import send_mail
from django.db import transaction
from django_tasks_db.models import DBTaskResult

class Rollback(Exception):
    pass

try:
    with transaction.atomic():
        send_mail("rolled back", "body", "app@example.com", ["a@example.org"])
        raise Rollback
except Rollback:
    pass
after_rollback = DBTaskResult.objects.count()
with transaction.atomic():
    send_mail("committed", "body", "app@example.com", ["b@example.org"])
    inside = DBTaskResult.objects.count()
tasks = list(DBTaskResult.objects.values_list("task_path", "args_kwargs"))
print(json.dumps({"after_rollback": after_rollback, "inside": inside, "tasks": tasks}))
"""


def django(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_django_tasks_deliver_only_what_was_committed(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    config = write_config(tmp_path, smtp_server.port, {"engine": "django"})
    data = json.loads(config.read_text())
    data["django"] = {"enqueue_on_commit": True}
    config.write_text(json.dumps(data))
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "MAILER_CONFIG": str(config),
        "DJANGO_SETTINGS_MODULE": "tests.tasks.django_settings",
        "DJANGO_DB": str(tmp_path / "django.db"),
    }  # fmt: skip
    django(env, "-m", "django", "migrate", "-v", "0")
    report = json.loads(django(env, "-c", SCRIPT).strip().splitlines()[-1])
    # nothing for the rolled-back transaction, nothing before the commit
    assert report["after_rollback"] == 0 and report["inside"] == 0
    (row,) = rows(tmp_path)
    assert row["state"] == "queued"
    ((path, args),) = report["tasks"]
    assert path == "mailer.django.tasks.deliver"
    assert args["args"] == [row["id"]]

    worker = ["-m", "django", "db_worker", "--batch", "--no-startup-delay", "--interval", "0.1"]
    django(env, *worker)
    assert rows(tmp_path)[0]["state"] == "sent"
    assert list(smtp_server.received().values()) == [1]

    # the same task enqueued again (a redelivery): the row is sent, nothing is sent twice
    again = "import django; django.setup(); from mailer.django.tasks import deliver; "
    django(env, "-c", again + f"deliver.enqueue({row['id']})")
    django(env, *worker)
    assert list(smtp_server.received().values()) == [1]
