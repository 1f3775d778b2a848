"""Where apps live: Django, Flask and OpenTelemetry integrations.

Each is imported through its short public path (``mailer.django``, ``mailer.flask``,
``mailer.otel``) and needs its framework installed; nothing here is imported by
``mailer`` itself, so the core stays free of them.
"""
