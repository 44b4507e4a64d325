"""API keys of the HTTP service: a file of SHA-256 digests, checked in constant time, never logged."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from funnel.errors import ConfigError

KEY_FILE_ENV = "FUNNEL_API_KEY_FILE"
_DIGEST = re.compile(r"[0-9a-f]{64}")
USER, ADMIN = "user", "admin"


def digest(key: str) -> str:
    """The SHA-256 hex digest of ``key`` (UTF-8), as a key file lists it."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class APIKeys:
    """The keys a service accepts, as SHA-256 digests with a role each (``user`` or ``admin``).

    Only digests are held, so neither the file nor a memory dump gives a key away; a key
    presented with a request is hashed and compared with every digest in constant time
    (:func:`hmac.compare_digest`, no early exit), so the time an answer takes does not say
    how much of a key was right.
    """

    digests: tuple[tuple[str, str], ...]

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> APIKeys:
        """Read a key file: one key per line, its SHA-256 hex digest, optionally followed by ``admin``.

        Blank lines and lines starting with ``#`` are skipped. Make a line with
        ``printf %s "$KEY" | sha256sum | cut -d' ' -f1`` (add `` admin`` for an admin key).

        Raises
        ------
        ConfigError
            The file cannot be read, a line is not a digest (a key written in clear is
            refused, naming the line but not echoing it), an unknown role, a digest on two
            lines (which role was meant is unknown), or no key at all.
        """
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the API key file {path}: {exc}") from exc
        digests = []
        first_line: dict[str, int] = {}
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            value, *role = fields
            if not _DIGEST.fullmatch(value.lower()):
                raise ConfigError(f"{path}, line {number}: not a SHA-256 hex digest (64 hex digits); write each key's "
                                  "digest, not the key: printf %s \"$KEY\" | sha256sum")
            if role not in ([], [ADMIN]):
                raise ConfigError(f"{path}, line {number}: after the digest only the word 'admin' may follow")
            value = value.lower()
            if value in first_line:
                raise ConfigError(f"{path}, lines {first_line[value]} and {number} list the same digest "
                                  f"({value[:8]}...); keep one line per key, with 'admin' after it for an admin key")
            first_line[value] = number
            digests.append((value, ADMIN if role else USER))
        if not digests:
            raise ConfigError(f"the API key file {path} lists no key; add a line per key (its SHA-256 digest)")
        return cls(tuple(digests))

    @classmethod
    def from_env(cls) -> APIKeys | None:
        """The keys of the file ``$FUNNEL_API_KEY_FILE`` names, or None when the variable is unset.

        Raises
        ------
        ConfigError
            The variable is set but empty or blank (:func:`key_file_setting`), or the file
            is refused by :meth:`from_file`.
        """
        key_file = key_file_setting()
        return cls.from_file(key_file) if key_file is not None else None

    def request_role(self, keys: Sequence[str], authorizations: Sequence[str]) -> str | None:
        """The role of a request's credentials: every ``X-API-Key`` and ``Authorization`` header it sent.

        Every credential must be one of the keys (an unknown or empty one beside a valid one,
        or an ``Authorization`` of another scheme than ``Bearer``, gives None), and of several
        valid keys the lesser role counts. None also when the request sent no credential.
        """
        presented = list(keys)
        for value in authorizations:
            scheme, _, token = value.strip().partition(" ")
            presented.append(token.strip() if scheme.lower() == "bearer" else "")  # another scheme: no key
        roles = [self.role(key) for key in presented]
        if not roles or None in roles:
            return None
        return USER if USER in roles else ADMIN

    def role(self, key: str | None) -> str | None:
        """The role of ``key`` (``user`` or ``admin``), or None when it is missing or not one of the keys."""
        if not key:
            return None
        presented = digest(key)
        found = None
        for value, role in self.digests:  # every digest compared: the time does not depend on which matched
            if hmac.compare_digest(presented, value):
                found = role
        return found


def key_file_setting(api_key_file: str | os.PathLike[str] | None = None) -> str | None:
    """The API key file a service reads: ``api_key_file`` if given, else ``$FUNNEL_API_KEY_FILE``.

    Parameters
    ----------
    api_key_file : path, optional
        The file named by the caller (``--api-key-file``); None falls back to the
        environment variable.

    Returns
    -------
    str or None
        The file's path, or None when neither names one: the service then runs without keys.

    Raises
    ------
    ConfigError
        The value given (or the variable, when set) is empty or blank: a key file that
        was meant but not named must not leave every route open.
    """
    if api_key_file is not None:
        value, source, fix = os.fspath(api_key_file), "--api-key-file (api_key_file)", "leave it out"
    elif KEY_FILE_ENV in os.environ:
        value, source, fix = os.environ[KEY_FILE_ENV], KEY_FILE_ENV, "unset it"
    else:
        return None
    if not value.strip():
        raise ConfigError(f"{source} is empty ({value!r}); name the API key file, or {fix} to serve without keys")
    return value


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
