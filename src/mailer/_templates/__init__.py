"""Templates rendered locally, so a provider without a stored template sends the same content.

:class:`TemplatesConfig` is the Mailer's ``templates`` section; :class:`LocalTemplates`
renders ``NAME.subject.txt``, ``NAME.txt`` and ``NAME.html`` (or ``NAME.mjml``) from its
``dir`` with Jinja2. Jinja2 is the ``templates`` extra, imported on first use.
"""

from .local import LocalTemplates, Rendered, TemplatesConfig

__all__ = ["LocalTemplates", "Rendered", "TemplatesConfig"]
