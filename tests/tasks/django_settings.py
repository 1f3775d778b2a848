"""The Django project of the django.tasks test: the backport's database backend, our
email backend storing into the outbox when the transaction commits, and the Mailer
config from ``$MAILER_CONFIG`` (the test writes it, with ``dispatch = {engine = "django"}``)."""

import os

SECRET_KEY = "test-only-not-secret"
USE_TZ = True
INSTALLED_APPS = ["django_tasks", "django_tasks_db"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_DB"]}}
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
EMAIL_BACKEND = "mailer.django.EmailBackend"
MAILER = os.environ["MAILER_CONFIG"]
