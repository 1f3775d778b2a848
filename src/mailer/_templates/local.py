"""Jinja2 rendering of a named template: subject, text and HTML from one directory.

Why these rules:

* StrictUndefined: a variable the data lacks is a :class:`MessageError` when the Mailer
  renders, before any I/O, instead of an empty gap in a sent mail.
* HTML autoescaping on for ``.html`` and ``.mjml`` (data is user input), off for the
  subject and text, where escaping would show ``&amp;`` to the reader.
* Compiled templates are cached by the Jinja2 environment (its loader checks file mtimes),
  and a message's rendering is made once and attached to it, so failover renders nothing
  again.
* MJML (``mjml`` extra) turns ``NAME.mjml`` into HTML after Jinja2 ran on it; CSS inlining
  (``css-inline`` extra) moves ``<style>`` rules into ``style`` attributes, which several
  webmail clients need. Both are off unless configured, and a missing extra is a
  ConfigError when the Mailer is built, not at the first send.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from .._errors import ConfigError, MessageError

if TYPE_CHECKING:
    import jinja2

__all__ = ["LocalTemplates", "Rendered", "TemplatesConfig"]


class TemplatesConfig(BaseModel):
    """The Mailer's ``templates`` section (see docs/configuration.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the directory holding ``NAME.subject.txt``, ``NAME.txt``, ``NAME.html``/``NAME.mjml``
    dir: Path
    #: render ``NAME.mjml`` to HTML with the ``mjml`` package (the ``mjml`` extra)
    mjml: bool = False
    #: inline ``<style>`` CSS into the HTML with ``css-inline`` (the ``css-inline`` extra)
    inline_css: bool = False


@dataclass(frozen=True)
class Rendered:
    """One rendering: what a Message's subject, text and html become."""

    subject: str
    text: str | None
    html: str | None


def _extra(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"this templates option needs the {extra!r} extra: "
            f"pip install 'mailer-failover[{extra}]'"
        ) from None


class LocalTemplates:
    """Renders templates from ``config.dir``; thread-safe, cheap to call again."""

    def __init__(self, config: TemplatesConfig | Any) -> None:
        if not isinstance(config, TemplatesConfig):
            config = TemplatesConfig.model_validate(config)
        self.config = config
        if not config.dir.is_dir():
            raise ConfigError(f"templates.dir {str(config.dir)!r} is not a directory")
        jinja = _extra("jinja2", "templates")
        self._mjml = _extra("mjml", "mjml") if config.mjml else None
        self._css = _extra("css_inline", "css-inline") if config.inline_css else None
        loader = jinja.FileSystemLoader(str(config.dir))
        self._html_env: jinja2.Environment = jinja.Environment(
            loader=loader, autoescape=True, undefined=jinja.StrictUndefined, auto_reload=True
        )
        self._text_env: jinja2.Environment = jinja.Environment(
            loader=loader,
            autoescape=False,
            undefined=jinja.StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=True,
        )
        self._jinja = jinja
        self._lock = threading.Lock()

    def render(self, name: str, data: dict[str, Any]) -> Rendered:
        """The subject, text and HTML of template ``name`` with ``data``.

        Raises MessageError for a missing template or variable, or a template error.
        Each file is looked up through Jinja2's cache (one stat to see it is current).
        """
        folder = str(self.config.dir)
        html_file = f"{name}.mjml" if self.config.mjml else f"{name}.html"
        subject = self._render(self._text_env, f"{name}.subject.txt", name, data)
        if subject is None:
            raise MessageError(f"template {name!r}: no {name}.subject.txt in {folder!r}")
        # a subject is one line: the trailing newline an editor adds is not part of it
        subject = " ".join(subject.split())
        text = self._render(self._text_env, f"{name}.txt", name, data)
        html = self._render(self._html_env, html_file, name, data)
        if text is None and html is None:
            raise MessageError(
                f"template {name!r}: neither {name}.txt nor {html_file} in {folder!r}"
            )
        if html is not None and self._mjml is not None:
            html = self._mjml.mjml_to_html(html).html
        if html is not None and self._css is not None:
            html = self._css.inline(html)
        return Rendered(subject, text, html)

    def _render(
        self, env: jinja2.Environment, file: str, name: str, data: dict[str, Any]
    ) -> str | None:
        """``file`` rendered, None when there is no such file."""
        jinja = self._jinja
        try:
            with self._lock:  # the environment's cache is not documented thread-safe
                template = env.get_template(file)
        except jinja.TemplateNotFound as exc:
            if exc.name != file:  # an {% include %} of a missing file is an error
                raise MessageError(f"template {name!r} ({file}): {exc.message}") from None
            return None
        except jinja.TemplateSyntaxError as exc:
            raise MessageError(
                f"template {name!r} ({file}, line {exc.lineno}): {exc.message}"
            ) from None
        try:
            return template.render(data)
        except jinja.UndefinedError as exc:
            raise MessageError(f"template {name!r} ({file}): {exc.message}") from None
        except jinja.TemplateSyntaxError as exc:
            raise MessageError(
                f"template {name!r} ({file}, line {exc.lineno}): {exc.message}"
            ) from None
        except jinja.TemplateError as exc:
            raise MessageError(f"template {name!r} ({file}): {exc}") from None
