"""Credentials never leave a remote URL qntz shows: userinfo and secret query values."""

from __future__ import annotations

import pytest

from qntz.core.redact import redact, redact_text


@pytest.mark.parametrize(("url", "shown"), [
    ("s3://AKIAXXX:SUPERSECRET@bucket/qntz", "s3://***@bucket/qntz"),
    ("s3://AKIA:wJal/K7MD+bPx@bucket/q", "s3://***@bucket/q"),  # an AWS secret's own '/'
    ("https://ghp_tokentoken@host/x", "https://***@host/x"),
    ("https://h/c?X-Amz-Signature=abc&region=eu&sig=d#top",
     "https://h/c?X-Amz-Signature=***&region=eu&sig=***#top"),
    ("gs://b/x?token=t1&access_key=k&Password=p", "gs://b/x?token=***&access_key=***&Password=***"),
    ("simplecache::s3://k:secretly@b/x", "simplecache::s3://***@b/x"),
    ("s3://bucket/qntz", "s3://bucket/qntz"),
    ("/srv/shared/qntz", "/srv/shared/qntz"),
])
def test_redact_hides_credentials_and_keeps_the_rest(url, shown):
    assert redact(url) == shown


def test_redact_text_masks_secrets_wherever_a_backend_quotes_them():
    url = "s3://AKIAXXX:SUPER%2FSECRET@bucket/qntz?token=TOKEN123"
    text = (f"failed on {url}: Invalid bucket name 'AKIAXXX:SUPER%2FSECRET@bucket'; "
            "signed with SUPER/SECRET and TOKEN123")
    clean = redact_text(text, url)
    assert "SUPER" not in clean and "TOKEN123" not in clean and "AKIAXXX" not in clean
    assert "s3://***@bucket/qntz?token=***" in clean and "'***@bucket'" in clean
    assert redact_text("ftp://host/x refused", "ftp://host/x") == "ftp://host/x refused"
