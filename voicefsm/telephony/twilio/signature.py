"""``X-Twilio-Signature``: typed wrappers over the Twilio SDK's RequestValidator, and the URLs Twilio signs.

Twilio signs HMAC-SHA1(auth token, URL + every POST parameter sorted by name). The URL is the
public one Twilio called: for a webhook ``https://host/path?query``, for the media-stream
WebSocket upgrade the ``wss://`` URL exactly as written in the TwiML (a GET, so no parameters).
Build it from the configured public base URL, never from ``Host``: TLS proxies rewrite that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator

Params = Mapping[str, object]
"""POST parameters: a dict, or a multi-value form with ``getlist`` (Starlette FormData, MultiDict)."""


def _pairs(params: Params) -> dict[str, list[object]] | None:
    """Every parameter's values, or None when one is not text (e.g. an uploaded file)."""
    getlist = getattr(params, "getlist", None)
    pairs: dict[str, list[object]] = {}
    for name in params:
        values = list(getlist(name)) if getlist is not None else [params[name]]
        if not isinstance(name, str) or not all(isinstance(value, str) for value in values):
            return None
        pairs[name] = values
    return pairs


class _Form(dict[str, list[object]]):
    """What RequestValidator expects of a multi-value form (it calls ``getlist``)."""

    def getlist(self, key: str) -> list[object]:
        return self[key]


def compute_signature(auth_token: str, url: str, params: Params) -> str:
    """The signature Twilio would send for a request to ``url`` carrying ``params``."""
    pairs = _pairs(params)
    if pairs is None:
        raise TypeError("Twilio signs text parameters only; a value in params is not a str")
    return str(RequestValidator(auth_token).compute_signature(url, _Form(pairs)))


def is_valid_signature(auth_token: str, url: str, params: Params, signature: str | None) -> bool:
    """Whether ``signature`` is Twilio's for this request (also tried with and without the URL's port).

    A missing or empty signature or token, or a non-text parameter, is simply invalid.
    """
    if not signature or not auth_token:
        return False
    pairs = _pairs(params)
    if pairs is None:
        return False
    return bool(RequestValidator(auth_token).validate(url, _Form(pairs), signature))


def is_valid_signature_any(tokens: Sequence[str], url: str, params: Params, signature: str | None) -> bool:
    """Like :func:`is_valid_signature`, accepting any of ``tokens`` (primary and secondary while rotating)."""
    # Check every token, not just up to the first match, so timing does not reveal which one matched.
    results = [is_valid_signature(token, url, params, signature) for token in tokens]
    return any(results)


def _join(public_base_url: str, path: str, *, scheme_map: Mapping[str, str], query: str = "") -> str:
    parts = urlsplit(public_base_url)
    if parts.scheme not in scheme_map or not parts.netloc:
        raise ValueError(
            f"the public base URL {public_base_url!r} must be an absolute http(s) URL, "
            "e.g. https://voice.example.com"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"the public base URL {public_base_url!r} must not carry a query string or fragment")
    joined = parts.path.rstrip("/") + "/" + path.lstrip("/")
    return urlunsplit((scheme_map[parts.scheme], parts.netloc, joined, query, ""))


def websocket_signature_url(public_base_url: str, path: str) -> str:
    """The URL Twilio signs when it opens the stream: ``https://host/base`` + ``path`` as ``wss://host/base/path``."""
    return _join(public_base_url, path, scheme_map={"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"})


def webhook_url(public_base_url: str, path: str, query: str = "") -> str:
    """The URL Twilio signs for a webhook: ``https://host/base/path?query`` (``query`` without the ``?``)."""
    return _join(
        public_base_url, path, scheme_map={"https": "https", "http": "http"}, query=query.lstrip("?")
    )
