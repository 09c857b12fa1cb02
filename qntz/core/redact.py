"""Credentials out of every remote URL qntz prints or writes.

A remote URL may carry secrets: userinfo (`s3://KEY:SECRET@bucket/x`) and query parameters
(`?token=…`, `X-Amz-Signature=…`). `redact(url)` is the URL as qntz shows it; `redact_text`
cleans a whole message, since a backend's own error text may quote the URL, or the path it
made of it (s3fs keeps `KEY:SECRET@bucket` as the bucket name), or the secret alone.
Over-redacting a message is the lesser harm: a secret is masked wherever it occurs.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
SECRET_NAME = re.compile(r"token|secret|passw|pwd|key|sig|credential|auth|session|x-amz-",
                         re.IGNORECASE)
USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^?#]*)@")


def redact(url: str) -> str:
    """`url` with its userinfo and its secret-looking query values replaced by `***`
    (each part of a chained fsspec URL, `a::b`, on its own)."""
    return "::".join(_redact_part(part) for part in url.split("::"))


def redact_text(text: str, url: str | None) -> str:
    """`text` with the raw `url` shown redacted, and every secret of it masked wherever it
    occurs (as written in the URL or percent-decoded)."""
    if not url:
        return text
    text = text.replace(url, redact(url))
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, f"{MASK}@" if secret.endswith("@") else MASK)
    return text


def _redact_part(url: str) -> str:
    url = USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", url, count=1)
    base, mark, query = url.partition("?")
    if not mark:
        return url
    query, hash_mark, fragment = query.partition("#")
    return f"{base}?{'&'.join(_redact_param(p) for p in query.split('&'))}{hash_mark}{fragment}"


def _redact_param(param: str) -> str:
    name, equals, value = param.partition("=")
    return f"{name}={MASK}" if equals and value and SECRET_NAME.search(unquote(name)) else param


def _secrets(url: str) -> set[str]:
    """What must never be shown: each userinfo (with its `@`; its password or token alone,
    too), and the values of secret-looking query parameters, raw and percent-decoded."""
    found: set[str] = set()
    for part in url.split("::"):
        if match := USERINFO.match(part):
            userinfo = match["userinfo"]
            found.add(userinfo + "@")
            if ":" in userinfo:  # user:password
                found |= {userinfo, userinfo.split(":", 1)[1]}
            elif len(userinfo) >= 8:  # a bare token (https://TOKEN@host), not a short user name
                found.add(userinfo)
        query = part.partition("?")[2].partition("#")[0]
        for param in query.split("&") if query else []:
            name, _, value = param.partition("=")
            if value and SECRET_NAME.search(unquote(name)):
                found.add(value)
    # A secret shorter than 4 characters is masked only with its `@`: masking it wherever
    # it occurs would garble every message (and hides next to nothing).
    return {s for s in found | {unquote(s) for s in found} if len(s) >= 4 or s.endswith("@")}
