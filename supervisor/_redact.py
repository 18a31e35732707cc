"""Secrets never reach disk or the console: one redactor for argv, env, events, summaries and CLI output.

Three rules, applied wherever text is written:

- by name: the value of a variable whose name looks secret (``HF_TOKEN``, ``OPENAI_KEY``, ``DB_PASS``,
  ``AUTH_HEADER``, ``AWS_SECRET_ACCESS_KEY``) is replaced in ``env``, and so is the value after a flag
  with such a name in argv (``--api-key X``, ``--hf-token=X``);
- by value: any value of a secret-named variable, from a service's env or the caller's environment, is
  replaced wherever it lands (a command line built from ``${HF_TOKEN}``, a log line quoted in a failure),
  as is the password of any URL found in a variable (``DATABASE_URL``);
- URL userinfo: ``scheme://user:password@host`` keeps the user and loses the password, in any string.
  People put unencoded ``/`` and ``@`` in passwords (``postgres://u:p@ss/w0rd@host/db``): the password runs
  to the last ``@`` of its word (words end at whitespace and quotes), so every part of it is hidden; a
  ``@`` later in a path or query hides more than the password, never less. Only ``host:port/...@`` (digits
  then ``/``, ``?`` or ``#``) is read as a port, not a password: ``http://127.0.0.1:8000/@user`` stays.

Pure functions over strings; nothing here knows about runs or files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "REDACTED",
    "Redactor",
    "argv_secrets",
    "header_secrets",
    "hide_flag_values",
    "is_secret_name",
    "secret_parts",
]

REDACTED = "<redacted>"
#: shorter values are not replaced by value (``KEY=1`` must not blank every ``1``); by name they still are
MIN_VALUE_LENGTH = 6
#: a name part (names split at ``_``, ``-`` and ``.``) that is, or ends with, one of these is secret
_SECRET_SUFFIXES = (
    "TOKEN",
    "SECRET",
    "SECRETS",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "CREDENTIALS",
    "KEY",
)
#: a name part equal to one of these is secret
_SECRET_PARTS = frozenset({"PASS", "PW", "AUTH", "AUTHORIZATION", "CREDS", "PAT", "PRIVATE", "COOKIE"})
#: names that match a pattern above but are well-known non-secrets
_NOT_SECRET = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK", "KEYBOARD", "XAUTHORITY", "GPG_KEY_ID"})
_NAME_PARTS = re.compile(r"[_\-.]+")
#: a word that may hold a URL: no whitespace, no quotes (a repr or JSON in a log line ends it)
_WORD = re.compile(r"[^\s\"']+")
#: ``scheme://user:`` (the user has no ``/``, ``@`` or ``:``); the password follows
_USERINFO_HEAD = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:\"']*:")
#: what follows ``host:`` when it is a port and a path, not a password
_PORT_THEN_PATH = re.compile(r"\d+[/?#]")


def is_secret_name(name: str) -> bool:
    """Whether a variable or flag name looks like it holds a secret (``HF_TOKEN``, ``--api-key``)."""
    upper = name.strip("-").upper()
    if upper in _NOT_SECRET:
        return False
    parts = [p for p in _NAME_PARTS.split(upper) if p]
    return any(p in _SECRET_PARTS or p.endswith(_SECRET_SUFFIXES) for p in parts)


#: a flag in a line of text and its value: ``--api-key X``, ``--hf-token=X``
_FLAG_VALUE = re.compile(r"(?<!\S)(?P<flag>--?[A-Za-z][\w.\-]*)(?P<sep>=|\s+)(?P<value>(?!-)\S+)")


def hide_flag_values(text: str) -> str:
    """``text`` (a command line in one string: an ``args`` override) with the value of each secret-named
    flag replaced, as ``Redactor.argv`` does for a list."""
    return _FLAG_VALUE.sub(
        lambda m: m.group("flag") + m.group("sep") + REDACTED if is_secret_name(m.group("flag")) else m.group(0), text
    )


def _url_password_spans(text: str) -> list[tuple[int, int]]:
    """Where each URL password of ``text`` is (start, end), in order; linear in ``text`` however many
    ``scheme://x:`` it holds (it redacts whole log lines)."""
    spans: list[tuple[int, int]] = []
    for word in _WORD.finditer(text):
        start, end = word.span()
        at = text.rfind("@", start, end)
        if at < 0 or text.find("://", start, at) < 0:
            continue
        for head in _USERINFO_HEAD.finditer(text, start, at):
            if head.end() < at and not _PORT_THEN_PATH.match(text, head.end(), at):
                spans.append((head.end(), at))  # to the word's last "@": nothing after it is a password
                break
    return spans


def _url_passwords(text: str) -> list[str]:
    return [text[start:end] for start, end in _url_password_spans(text)]


def _hide_url_passwords(text: str) -> str:
    pieces: list[str] = []
    done = 0
    for start, end in _url_password_spans(text):
        pieces += [text[done:start], REDACTED]
        done = end
    return "".join(pieces) + text[done:] if pieces else text


def secret_parts(text: str) -> list[str]:
    """What the rules by form hide in ``text``: each URL password and each secret-named flag's value."""
    flags = [m.group("value") for m in _FLAG_VALUE.finditer(text) if is_secret_name(m.group("flag"))]
    return _url_passwords(text) + flags


def argv_secrets(argv: Sequence[str]) -> list[str]:
    """The values ``Redactor.argv`` hides by their flag's name (``--api_key X``, ``--token=X``): known as
    secrets, they are hidden wherever else they land too (a probe's header, a log line quoted in an event)."""
    found: list[str] = []
    for index, arg in enumerate(argv):
        if not arg.startswith("-") or len(arg) < 2:
            continue
        flag, equals, value = arg.partition("=")
        if not is_secret_name(flag):
            continue
        if equals:
            found.append(value)
        elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            found.append(argv[index + 1])
    return found


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The value of each secret-named header (``Authorization``, ``X-Api-Key``), and its credentials
    alone when it has a scheme (``Bearer KEY``: ``KEY`` too, wherever it is quoted without the scheme)."""
    found: list[str] = []
    for name, value in headers.items():
        if is_secret_name(name):
            found.append(value)
            scheme, _, credentials = value.partition(" ")
            if scheme and credentials.strip():
                found.append(credentials.strip())
    return found


class Redactor:
    """Replaces known secret values, URL passwords and secret flag values in whatever it is given."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        wanted = {v for v in values if len(v) >= MIN_VALUE_LENGTH and v != REDACTED}
        self.values: tuple[str, ...] = tuple(sorted(wanted, key=lambda v: (-len(v), v)))  #: longest first
        self._pattern = re.compile("|".join(map(re.escape, self.values))) if self.values else None

    @classmethod
    def from_environments(cls, *environments: Mapping[str, str]) -> Redactor:
        """Secrets of the given environments: values of secret-named variables and URL passwords."""
        values: set[str] = set()
        for environment in environments:
            for name, value in environment.items():
                if is_secret_name(name):
                    values.add(value)
                values.update(_url_passwords(value))
        return cls(values)

    def text(self, text: str) -> str:
        """``text`` with every known secret value and every URL password replaced."""
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        return _hide_url_passwords(text) if "://" in text else text

    def argv(self, argv: Sequence[str]) -> list[str]:
        """A command line: secret values, and the value of each secret-named flag (``--token X``,
        ``--token=X``)."""
        redacted: list[str] = []
        hide_next = False
        for arg in argv:
            if hide_next and not arg.startswith("--"):
                redacted.append(REDACTED)
                hide_next = False
                continue
            hide_next = False
            if arg.startswith("-") and len(arg) > 1:
                flag, equals, _ = arg.partition("=")
                if is_secret_name(flag):
                    if equals:
                        redacted.append(f"{flag}={REDACTED}")
                        continue
                    hide_next = True
            redacted.append(self.text(arg))
        return redacted

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        """An environment: secret-named variables lose their value, the others are redacted as text."""
        return {k: REDACTED if is_secret_name(k) else self.text(v) for k, v in env.items()}

    def data(self, value: Any) -> Any:
        """Every string inside JSON-like data (dicts, lists, strings), keys included."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.data(k) if isinstance(k, str) else k: self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value

    def __or__(self, other: Redactor) -> Redactor:
        return Redactor({*self.values, *other.values})

    def __repr__(self) -> str:
        return f"<Redactor of {len(self.values)} secret values>"
