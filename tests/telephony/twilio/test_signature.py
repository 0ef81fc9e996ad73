from __future__ import annotations

import base64
import hashlib
import hmac
import io

import pytest
from starlette.datastructures import FormData, UploadFile

from voicefsm.telephony.twilio.signature import (
    compute_signature,
    is_valid_signature,
    is_valid_signature_any,
    webhook_url,
    websocket_signature_url,
)

# Twilio's published example (https://www.twilio.com/docs/usage/security#validating-requests).
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
EXPECTED = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def hmac_sha1(token: str, text: str) -> str:
    return base64.b64encode(hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()).decode()


def test_twilios_published_vector() -> None:
    assert compute_signature(TOKEN, URL, PARAMS) == EXPECTED
    assert is_valid_signature(TOKEN, URL, PARAMS, EXPECTED)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_changing_any_parameter_invalidates(name: str) -> None:
    assert not is_valid_signature(TOKEN, URL, {**PARAMS, name: PARAMS[name] + "0"}, EXPECTED)


def test_extra_or_missing_parameters_invalidate() -> None:
    assert not is_valid_signature(TOKEN, URL, {**PARAMS, "Extra": "1"}, EXPECTED)
    assert not is_valid_signature(TOKEN, URL, {k: v for k, v in PARAMS.items() if k != "To"}, EXPECTED)


@pytest.mark.parametrize(
    "url",
    [
        "http://mycompany.com/myapp.php?foo=1&bar=2",
        "https://evil.example.com/myapp.php?foo=1&bar=2",
        "https://mycompany.com/myapp.php?foo=1&bar=3",
        "wss://mycompany.com/myapp.php?foo=1&bar=2",
    ],
)
def test_a_signature_for_another_url_is_invalid(url: str) -> None:
    assert not is_valid_signature(TOKEN, url, PARAMS, EXPECTED)


@pytest.mark.parametrize(
    "signature", [None, "", " ", "0/KCTR6DLpKmkAf8muzZqo1nDgQ", "é" * 28, EXPECTED.lower()]
)
def test_missing_or_garbled_signatures_are_invalid(signature: str | None) -> None:
    assert not is_valid_signature(TOKEN, URL, PARAMS, signature)


def test_wrong_or_empty_token_is_invalid() -> None:
    assert not is_valid_signature("54321", URL, PARAMS, EXPECTED)
    assert not is_valid_signature("", URL, PARAMS, compute_signature("", URL, PARAMS))


def test_the_default_port_may_be_in_either_url() -> None:
    with_port = compute_signature(TOKEN, "https://mycompany.com:443/myapp.php?foo=1&bar=2", PARAMS)
    assert is_valid_signature(TOKEN, URL, PARAMS, with_port)
    assert is_valid_signature(TOKEN, "https://mycompany.com:443/myapp.php?foo=1&bar=2", PARAMS, EXPECTED)


def test_the_websocket_upgrade_signs_the_wss_url_alone() -> None:
    url = "wss://voice.example.com/twilio/stream"
    signature = compute_signature("secret", url, {})
    assert signature == hmac_sha1("secret", url)
    assert is_valid_signature("secret", url, {}, signature)
    assert not is_valid_signature("secret", "https://voice.example.com/twilio/stream", {}, signature)


def test_multi_value_forms_sign_every_value() -> None:
    url = "https://voice.example.com/twilio/status"
    form = FormData(
        [("StatusCallbackEvent", "ringing"), ("CallSid", "CA1"), ("StatusCallbackEvent", "answered")]
    )
    signature = compute_signature("secret", url, form)
    assert signature == hmac_sha1(
        "secret", url + "CallSidCA1StatusCallbackEventansweredStatusCallbackEventringing"
    )
    assert is_valid_signature("secret", url, form, signature)
    only_one = FormData([("StatusCallbackEvent", "ringing"), ("CallSid", "CA1")])
    assert not is_valid_signature("secret", url, only_one, signature)


def test_non_text_parameters_are_never_valid() -> None:
    upload = UploadFile(io.BytesIO(b"x"), filename="x.txt")
    form = FormData([("CallSid", "CA1"), ("File", upload)])
    assert not is_valid_signature("secret", "https://v.example.com/x", form, "c2lnbmF0dXJl")
    with pytest.raises(TypeError, match="text parameters only"):
        compute_signature("secret", "https://v.example.com/x", form)


def test_any_of_the_tokens_may_have_signed() -> None:
    assert is_valid_signature_any(["old-primary", TOKEN], URL, PARAMS, EXPECTED)
    assert is_valid_signature_any([TOKEN, "secondary"], URL, PARAMS, EXPECTED)
    assert not is_valid_signature_any(["old-primary", "secondary"], URL, PARAMS, EXPECTED)
    assert not is_valid_signature_any([], URL, PARAMS, EXPECTED)
    assert not is_valid_signature_any([TOKEN], URL, PARAMS, None)


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("https://voice.example.com", "/twilio/stream", "wss://voice.example.com/twilio/stream"),
        ("https://voice.example.com/", "twilio/stream", "wss://voice.example.com/twilio/stream"),
        ("https://example.com/base/", "/twilio/stream", "wss://example.com/base/twilio/stream"),
        ("https://example.com:8443/base", "/s", "wss://example.com:8443/base/s"),
        ("http://127.0.0.1:8000", "/twilio/stream", "ws://127.0.0.1:8000/twilio/stream"),
    ],
)
def test_websocket_signature_url(base: str, path: str, expected: str) -> None:
    assert websocket_signature_url(base, path) == expected


@pytest.mark.parametrize(
    ("base", "path", "query", "expected"),
    [
        ("https://voice.example.com", "/twilio/voice", "", "https://voice.example.com/twilio/voice"),
        (
            "https://example.com/base",
            "/twilio/voice",
            "a=1&b=2",
            "https://example.com/base/twilio/voice?a=1&b=2",
        ),
        ("https://example.com/", "/v", "?x=%20y", "https://example.com/v?x=%20y"),
    ],
)
def test_webhook_url(base: str, path: str, query: str, expected: str) -> None:
    assert webhook_url(base, path, query) == expected


@pytest.mark.parametrize(
    "base", ["voice.example.com", "ftp://voice.example.com", "https://", "https://x.com/?a=1"]
)
def test_a_bad_public_base_url_is_explained(base: str) -> None:
    with pytest.raises(ValueError, match="public base URL"):
        webhook_url(base, "/twilio/voice")
    with pytest.raises(ValueError, match="public base URL"):
        websocket_signature_url(base, "/twilio/stream")
