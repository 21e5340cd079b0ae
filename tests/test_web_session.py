"""The browser session over plain HTTP (server/api_web_auth.py), as a page would use it:
the refresh token only in an HttpOnly cookie scoped to ``/api/v1/auth/web``, the CSRF
double-submit check on every route that reads it, and sign out everywhere.

Plain http on 127.0.0.1 is the development set-up: the cookies come without ``Secure``
there and with it once the request says it came over https.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.conftest import RunningServer
from tests.helpers import bearer, register

PASSWORD = "correct horse battery"


@pytest.fixture
async def browser_like() -> AsyncIterator[aiohttp.ClientSession]:
    """A client with a cookie jar that keeps cookies of an IP-address host (a browser
    does; aiohttp's default jar does not)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


def set_cookies(reply: aiohttp.ClientResponse) -> dict[str, Any]:
    """Every Set-Cookie of ``reply`` by name, as parsed morsels."""
    out: dict[str, Any] = {}
    for header in reply.headers.getall("Set-Cookie", []):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        out.update(parsed)
    return out


async def web_login(http: aiohttp.ClientSession, server: RunningServer,
                    username: str) -> dict[str, Any]:
    async with http.post(f"{server.url}/api/v1/auth/web/login",
                         json={"username": username, "password": PASSWORD}) as reply:
        body = await reply.json()
        assert reply.status == 200, body
        cookies = set_cookies(reply)
    refresh, csrf = cookies["hearth_refresh"], cookies["hearth_csrf"]
    assert refresh["httponly"] and refresh["path"] == "/api/v1/auth/web"
    assert refresh["samesite"] == "Strict" and not refresh["secure"]  # plain http
    assert not csrf["httponly"] and csrf["path"] == "/" and csrf["samesite"] == "Strict"
    assert csrf.value == body["csrf_token"]
    assert "refresh_token" not in body  # never in a body a script can read
    assert set(body) == {"user", "access_token", "expires_in", "csrf_token"}
    return dict(body)


async def web_post(http: aiohttp.ClientSession, server: RunningServer, route: str,
                   csrf: str | None, **headers: str) -> tuple[int, Any]:
    if csrf is not None:
        headers["X-Hearth-CSRF"] = csrf
    async with http.post(f"{server.url}/api/v1/auth/web/{route}", headers=headers) as reply:
        text = await reply.text()
        return reply.status, (await reply.json() if text else None)


async def test_cookie_refresh_needs_the_csrf_proof(live_server: RunningServer,
                                                   browser_like: aiohttp.ClientSession) -> None:
    person = await register(browser_like, live_server.url)
    session = await web_login(browser_like, live_server, person["user"]["username"])
    csrf = session["csrf_token"]

    # Without the header, with a wrong one, or from another site: 403 csrf_failed.
    for proof, extra in ((None, {}), ("wrong-value", {}),
                         (csrf, {"Origin": "https://evil.example"}),
                         (csrf, {"Sec-Fetch-Site": "cross-site"})):
        status, body = await web_post(browser_like, live_server, "refresh", proof, **extra)
        assert (status, body["error"]["code"]) == (403, "csrf_failed"), (proof, extra, body)
        assert body["error"]["message"]

    # With it (and from the server's own origin): a new access token, the cookie rotated.
    old = browser_like.cookie_jar.filter_cookies(
        URL(live_server.url + "/api/v1/auth/web/refresh"))["hearth_refresh"].value
    status, body = await web_post(browser_like, live_server, "refresh", csrf,
                                  Origin=live_server.url, **{"Sec-Fetch-Site": "same-origin"})
    assert status == 200, body
    assert body["user"]["id"] == person["user"]["id"] and body["csrf_token"] == csrf
    new = browser_like.cookie_jar.filter_cookies(
        URL(live_server.url + "/api/v1/auth/web/refresh"))["hearth_refresh"].value
    assert new != old
    async with browser_like.get(f"{live_server.url}/api/v1/users/@me",
                                headers=bearer(body["access_token"])) as reply:
        assert reply.status == 200
    # The cookie is scoped to the auth routes: no other route ever receives it.
    assert "hearth_refresh" not in browser_like.cookie_jar.filter_cookies(
        URL(live_server.url + "/api/v1/users/@me"))

    # A request with no cookie at all (another browser): 401 invalid_token.
    async with aiohttp.ClientSession() as stranger, stranger.post(
            f"{live_server.url}/api/v1/auth/web/refresh",
            headers={"X-Hearth-CSRF": csrf}, cookies={"hearth_csrf": csrf}) as reply:
        body = await reply.json()
        assert (reply.status, body["error"]["code"]) == (401, "invalid_token")


async def test_login_from_another_site_is_refused_and_https_makes_secure_cookies(
        live_server: RunningServer, browser_like: aiohttp.ClientSession) -> None:
    person = await register(browser_like, live_server.url)
    login = {"username": person["user"]["username"], "password": PASSWORD}
    for headers in ({"Origin": "https://evil.example"}, {"X-Forwarded-Proto": "https"}):
        async with browser_like.post(f"{live_server.url}/api/v1/auth/web/login", json=login,
                                     headers=headers) as reply:
            body = await reply.json()
            cookies = set_cookies(reply)
            status = reply.status
        if "Origin" in headers:  # signing a visitor in from another site: refused
            assert (status, body["error"]["code"]) == (403, "csrf_failed")
            assert cookies == {}
        else:  # served over https (a TLS proxy says so): Secure cookies
            assert status == 200
            assert cookies["hearth_refresh"]["secure"] and cookies["hearth_csrf"]["secure"]


async def test_logout_clears_and_sign_out_everywhere_revokes_every_family(
        live_server: RunningServer, browser_like: aiohttp.ClientSession) -> None:
    person = await register(browser_like, live_server.url)
    name = person["user"]["username"]
    api_refresh = person["refresh_token"]  # a JSON-API client (an app) signed in too

    # Browser 1 signs out: its cookie stops working, the app's token does not.
    session = await web_login(browser_like, live_server, name)
    status, _ = await web_post(browser_like, live_server, "logout", session["csrf_token"])
    assert status == 204
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        second = await web_login(other, live_server, name)
        status, body = await web_post(other, live_server, "refresh", second["csrf_token"])
        assert status == 200, body
        async with browser_like.post(f"{live_server.url}/api/v1/auth/refresh",
                                     json={"refresh_token": api_refresh}) as reply:
            assert reply.status == 200
            api_refresh = (await reply.json())["refresh_token"]

        # Browser 2 signs out everywhere: browser 3 and the app must sign in again.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as third:
            third_session = await web_login(third, live_server, name)
            status, body = await web_post(other, live_server, "logout-all", None)
            assert (status, body["error"]["code"]) == (403, "csrf_failed")
            status, _ = await web_post(other, live_server, "logout-all", second["csrf_token"])
            assert status == 204
            status, body = await web_post(third, live_server, "refresh",
                                          third_session["csrf_token"])
            assert (status, body["error"]["code"]) == (401, "invalid_token")
            # The refusal also deletes the CSRF cookie: the page stops trying.
            assert "hearth_csrf" not in third.cookie_jar.filter_cookies(
                URL(live_server.url + "/"))
        async with browser_like.post(f"{live_server.url}/api/v1/auth/refresh",
                                     json={"refresh_token": api_refresh}) as reply:
            assert reply.status == 401
        status, body = await web_post(other, live_server, "refresh", second["csrf_token"])
        assert status in (401, 403), body  # its cookies were cleared


async def test_sign_out_everywhere_for_the_json_api(live_server: RunningServer,
                                                    browser_like: aiohttp.ClientSession) -> None:
    person = await register(browser_like, live_server.url)
    session = await web_login(browser_like, live_server, person["user"]["username"])
    url = f"{live_server.url}/api/v1/auth/logout-all"
    async with browser_like.post(url) as reply:
        assert reply.status == 401 and (await reply.json())["error"]["code"] == "unauthorized"
    async with browser_like.post(url, headers=bearer(person["access_token"])) as reply:
        assert reply.status == 204
    async with browser_like.post(f"{live_server.url}/api/v1/auth/refresh",
                                 json={"refresh_token": person["refresh_token"]}) as reply:
        assert reply.status == 401
    status, body = await web_post(browser_like, live_server, "refresh", session["csrf_token"])
    assert (status, body["error"]["code"]) == (401, "invalid_token")


async def test_web_register_signs_in(live_server: RunningServer,
                                     browser_like: aiohttp.ClientSession) -> None:
    async with browser_like.post(f"{live_server.url}/api/v1/auth/web/register",
                                 json={"username": "webby", "password": PASSWORD,
                                       "display_name": "Webby"}) as reply:
        body = await reply.json()
        assert reply.status == 201, body
        assert body["user"]["display_name"] == "Webby" and "refresh_token" not in body
    status, body = await web_post(browser_like, live_server, "refresh", body["csrf_token"])
    assert status == 200 and body["user"]["username"] == "webby"
