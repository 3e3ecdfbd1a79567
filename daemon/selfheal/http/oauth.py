"""OAuth 2.0 refresh-token grants (RFC 6749 s. 6): the request, and the answer read into a
TokenGrant or a RefreshFailed. httpx errors are translated here."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import orjson

from selfheal.core.diagnose import needs_reauthorization
from selfheal.http.clients import USER_AGENT
from selfheal.http.replay import replayable
from selfheal.models import TokenGrant

__all__ = ["RefreshFailed", "refresh_access_token"]


class RefreshFailed(Exception):
    """The refresh did not yield a token. `reauthorize`: the user must reconnect
    (invalid_grant); `temporary`: the endpoint is down or answered garbage."""

    def __init__(self, reason: str, *, reauthorize: bool = False, temporary: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.reauthorize = reauthorize
        self.temporary = temporary


async def refresh_access_token(
    client: httpx.AsyncClient,
    oauth_config: Mapping[str, Any],
    refresh_token: str,
    deadline: float,
) -> TokenGrant:
    token_url = oauth_config.get("token_url")
    client_id = oauth_config.get("client_id")
    if not isinstance(token_url, str) or replayable("POST", token_url) is not None:
        raise RefreshFailed("oauth_config.token_url is missing or not an absolute URL")
    if not isinstance(client_id, str) or not client_id:
        raise RefreshFailed("oauth_config.client_id is missing")
    client_secret = oauth_config.get("client_secret")
    secret = client_secret if isinstance(client_secret, str) else ""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    scopes = oauth_config.get("scopes")
    if isinstance(scopes, list) and scopes:
        form["scope"] = " ".join(str(s) for s in scopes)
    elif isinstance(scopes, str) and scopes.strip():
        form["scope"] = scopes.strip()
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if str(oauth_config.get("client_auth", "basic")).lower() in {"form", "client_secret_post"}:
        form["client_id"] = client_id
        if secret:
            form["client_secret"] = secret
    else:
        # RFC 6749 s. 2.3.1: both parts form-urlencoded before the Basic encoding.
        pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    try:
        with anyio.fail_after(deadline):  # the whole exchange, however slowly it trickles
            response = await client.post(token_url, data=form, headers=headers)
    except (httpx.InvalidURL, ValueError) as exc:
        raise RefreshFailed("oauth_config.token_url is not a valid URL") from exc
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise RefreshFailed("the token endpoint timed out", temporary=True) from exc
    except httpx.HTTPError as exc:
        raise RefreshFailed(
            f"the token endpoint is unreachable ({type(exc).__name__})", temporary=True
        ) from exc
    return _parse_grant(response)


def _parse_grant(response: httpx.Response) -> TokenGrant:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if response.status_code >= 500 or response.status_code == 429:
        raise RefreshFailed(
            f"the token endpoint answered HTTP {response.status_code}", temporary=True
        )
    if response.status_code != 200 or error is not None:
        code = error if isinstance(error, str) else f"HTTP {response.status_code}"
        raise RefreshFailed(
            f"the token endpoint refused the refresh: {code[:100]}",
            reauthorize=needs_reauthorization(code),
        )
    if not isinstance(body, dict):
        raise RefreshFailed("the token endpoint answered without a JSON object", temporary=True)
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise RefreshFailed("the token endpoint answered without an access_token", temporary=True)
    rotated = body.get("refresh_token")
    expires_in = body.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    return TokenGrant(
        access_token=access_token,
        refresh_token=rotated if isinstance(rotated, str) and rotated else None,
        expires_in=float(expires_in)
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
        else None,
    )
