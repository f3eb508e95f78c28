"""Secrets out of everything shown: URLs and DSNs as they may be printed, logged or put into MLflow.

Light on purpose (no database driver imported), so that the command line and the tracking code can
mask every URI they show.
"""

from __future__ import annotations

import os
import re

MASK = "***"

# The user part of a URL: everything up to the last "@" before the host, so that a password holding
# an unencoded "@" is masked whole.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/?#@\s]*):(?P<secret>[^/?#\s]*)@"
                           r"(?=[^@/?#\s]*(?:[/?#\s]|$))")
# Secrets passed as parameters, in a URL query (password=...&) or a key=value DSN (password='a b').
_SECRET_PARAMETER = re.compile(
    r"(?i)(?P<key>(?<![\w])(?:password|passwd|pwd|sslpassword|secret|token|access_token|api_key)\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^&;\s]+)")


def mask_url(url: str | os.PathLike) -> str:
    """The text with every secret it carries replaced by ***: the password of any ``scheme://user:pw@host``
    URL (``postgresql+psycopg2://``, ``http://``..., a password holding ``@`` included), and
    ``password=``, ``sslpassword=`` and similar parameters in a URL query or a ``key=value`` DSN.

    Text without secrets (a directory path, a URL without password) is returned unchanged, so callers
    can mask every source, and a driver message keeps every word but the secret.
    """
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", str(url))
    return _SECRET_PARAMETER.sub(lambda m: m["key"] + MASK, text)
