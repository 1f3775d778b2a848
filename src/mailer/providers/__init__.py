"""Built-in providers. Each registers through the ``mailer.providers`` entry-point group."""
