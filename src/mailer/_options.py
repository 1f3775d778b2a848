"""Option spellings: other libraries' names as aliases, "did you mean", and error texts.

Users arrive with config blocks from Nodemailer's and NexoMailer's pages (camelCase names,
milliseconds). Refusing them as "unknown option" sends people away, so a config model
declares those names as aliases of its own options, in their own units, and they are
renamed (and converted) *before* validation: the model, its repr and ``mailer verify``
only ever hold our canonical names. Giving one option under both names is an error: we
cannot know which one was meant.

The same tables drive the error texts: an unknown key gets "did you mean ...?" from the
model's option names and aliases, and a Nodemailer option we do not offer says why and
what to do instead. Error texts never echo input values (a mistyped key may sit next to a
password); option names and keys are echoed, values never.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = [
    "MOVED_KEYS",
    "MS_LOOKING_SECONDS",
    "SHORTEST_MS",
    "Alias",
    "close_names",
    "normalize_options",
    "resolve_paths",
    "validation_text",
]

#: a duration in seconds at least this large was almost certainly meant as milliseconds
MS_LOOKING_SECONDS = 1000.0


#: a duration alias in milliseconds below this is refused: no connection or reply comes
#: that fast, so it was written in seconds (``connectionTimeout: 5``)
SHORTEST_MS = 100.0


@dataclass(frozen=True)
class Alias:
    """Another library's name for one of our options (at the same level of the config)."""

    canonical: str
    #: the alias is in milliseconds and our option in seconds
    milliseconds: bool = False


def _number(value: Any) -> float | None:
    """A number from JSON/TOML/Python, or from a URL query string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def normalize_options(
    data: Any,
    *,
    aliases: Mapping[str, Alias],
    refused: Mapping[str, str] | None = None,
    seconds: Iterable[str] = (),
) -> Any:
    """Rename aliases to canonical names (converting units) and refuse what cannot work.

    Raises ValueError (which pydantic reports at the model's location) for: an option
    given under two names, an option we do not offer (with the reason and what to do),
    an alias in milliseconds that is not a number, and a duration in seconds that looks
    like milliseconds.
    """
    if not isinstance(data, Mapping):
        return data  # let the model report the wrong type
    seconds = frozenset(seconds)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if refused and key in refused:
            raise ValueError(f"{key} is not offered: {refused[key]}")
        alias = aliases.get(key) if isinstance(key, str) else None
        if alias is None:
            out[key] = value
            continue
        if alias.canonical in data:
            raise ValueError(
                f"{key} and {alias.canonical} are the same option; give only one "
                f"({alias.canonical} is our name"
                + (", in seconds; " + key + " is in milliseconds)" if alias.milliseconds else ")")
            )
        if alias.milliseconds and value is not None:
            number = _number(value)
            if number is None:
                raise ValueError(f"{key} must be a number of milliseconds")
            if alias.canonical in seconds and 0 < number < SHORTEST_MS:
                raise ValueError(
                    f"{key} = {number:g} is in milliseconds ({number / 1000:g} s), too short "
                    f"for a timeout: write {key} = {number * 1000:g} for {number:g} seconds, "
                    f"or {alias.canonical} = {number:g} (our name, in seconds)"
                )
            value = number / 1000.0
        out[alias.canonical] = value
    for key in seconds:
        if key in data and key not in aliases:
            number = _number(data[key])
            if number is not None and number >= MS_LOOKING_SECONDS:
                ms_name = next(
                    (
                        a
                        for a, spec in aliases.items()
                        if spec.canonical == key and spec.milliseconds
                    ),
                    None,
                )
                instead = f", or {ms_name} = {number:g} (milliseconds)" if ms_name else ""
                raise ValueError(
                    f"{key} = {number:g} is in seconds ({number / 3600:.1f} hours), which "
                    f"looks like milliseconds: write {key} = {number / 1000:g}{instead}"
                )
    return out


def close_names(word: str, candidates: Iterable[str]) -> list[str]:
    """The candidates ``word`` is probably a misspelling of, best first."""
    pool = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(word.lower(), list(pool), n=2, cutoff=0.75)
    if not found:
        # "max_conection" vs "max_connections": compare without separators and case too
        squashed = {c.replace("_", "").replace("-", ""): c for c in pool}
        found = [
            squashed[m]
            for m in difflib.get_close_matches(
                word.lower().replace("_", "").replace("-", ""), list(squashed), n=2, cutoff=0.75
            )
        ]
    return [pool[f] for f in found]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model = _model_of(arg)
            if model is not None:
                return model
    return None


def _model_at(model: type[BaseModel] | None, path: Iterable[Any]) -> type[BaseModel] | None:
    for part in path:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _model_of(model.model_fields[part].annotation)
    return model


#: keys from settings tables and other libraries that belong elsewhere in our config,
#: whatever the level they were pasted at (lower-cased): the sender is a message default
#: in every config; a model adds its own moves in ``option_moves`` (SMTP: the login)
MOVED_KEYS: Mapping[str, str] = {
    "from_email": "defaults.from (at the top of the Mailer config, beside providers)",
    "from_name": "defaults.from, as 'Name <address>' (at the top of the Mailer config)",
    "from": "defaults.from (at the top of the Mailer config, beside providers)",
    "sender": "defaults.from (at the top of the Mailer config, beside providers)",
}


def _suggestion(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    """ " (did you mean X?)" for an unknown key at ``loc``, or ""."""
    where = _model_at(model, loc[:-1])
    key = loc[-1] if loc else None
    if where is None or not isinstance(key, str):
        return ""
    moves: Mapping[str, str] = {**MOVED_KEYS, **getattr(where, "option_moves", {})}
    moved = moves.get(key.lower())
    if moved is not None:
        return f"; it belongs at {moved}"
    aliases: Mapping[str, Alias] = getattr(where, "option_aliases", {})
    names = [*where.model_fields, *aliases]
    matches = close_names(key, names)
    if not matches:
        return ""
    best = matches[0]
    if best in aliases:
        return f"; did you mean {best} (our name: {aliases[best].canonical})?"
    return f"; did you mean {best}?"


def validation_text(what: str, exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """``invalid WHAT: `` and a one-line summary of a pydantic error that never shows input
    values: the one summariser, for config (``config for provider 'x'``) and messages
    (``message``) alike.

    Each error reads ``where: why``. A nested model that raised its own summary (an
    Address inside ``to``) is not announced twice. With ``model`` (the model that was
    validated, for config), an unknown key reads "unknown option" with "did you mean"
    from that level's option names and aliases.
    """
    lead = f"invalid {what}: "
    parts = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(err["loc"])
        text = str(err.get("msg", "")).removeprefix("Value error, ").removeprefix(lead)
        if model is not None and err.get("type") == "extra_forbidden":
            text = "unknown option" + _suggestion(model, loc)
        where = ".".join(str(p) for p in loc)
        parts.append(f"{where}: {text}" if where else text)
    return lead + "; ".join(parts)


def _is_path(annotation: Any) -> bool:
    if annotation is Path:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_path(a) for a in typing.get_args(annotation))
    return False


def resolve_paths(model: type[BaseModel], data: Any, base: Path) -> Any:
    """Relative paths in ``data`` (for ``model``) made relative to ``base`` instead.

    A config file that says ``ca_file = "certs/ca.pem"`` means next to itself, not
    wherever the process happens to start; a path typed into Python code keeps meaning
    the working directory, as it does everywhere else.
    """
    if not isinstance(data, Mapping):
        return data
    out = dict(data)
    for key, value in data.items():
        info = model.model_fields.get(key) if isinstance(key, str) else None
        if info is None:
            continue
        if _is_path(info.annotation) and isinstance(value, str | Path):
            path = Path(value).expanduser()
            out[key] = str(path if path.is_absolute() else base / path)
            continue
        sub = _model_of(info.annotation)
        if sub is not None:
            out[key] = resolve_paths(sub, value, base)
    return out
