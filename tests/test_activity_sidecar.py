"""The activity sidecar mounted in the default ``hearth serve`` (in-process): outbox in,
``activity_recorded`` out, and its gateway request ``fetch_activity``."""

from __future__ import annotations

import aiohttp

from tests.conftest import RunningServer
from tests.helpers import GatewayClient, bearer, register


async def test_activity_over_the_gateway(live_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        me = await register(http, live_server.url)
        outsider = await register(http, live_server.url)
        async with http.post(f"{live_server.url}/api/v1/communities", json={"name": "a"},
                             headers=bearer(me["access_token"])) as reply:
            created = await reply.json()
            assert reply.status == 201, created
        cid = created["community"]["id"]
        channel_id = created["channels"][0]["id"]
        client = await GatewayClient.identified(http, live_server.ws_url, me["access_token"])
        for i in range(3):
            await client.ok("send_message", channel_id=channel_id, content=f"m{i}",
                            nonce=f"n{i}")
        last = {}
        for _ in range(3):
            last = await client.event("activity_recorded", timeout=20, kind="message",
                                      community_id=cid)
        assert last["total"] == 3
        got = await client.ok("fetch_activity", community_id=cid, limit=2)
        assert got["type"] == "activity"
        assert [i["kind"] for i in got["items"]] == ["message", "message"]
        assert got["totals"]["message"] == 3 and got["totals"]["joined"] == 1
        other = await GatewayClient.identified(http, live_server.ws_url,
                                               outsider["access_token"])
        refused = await other.request("fetch_activity", community_id=cid,
                                      user_id=me["user"]["id"])
        assert refused["op"] == "error" and refused["code"] == "not_found", refused
        refused = await client.request("fetch_activity", community_id=cid, limit=0)
        assert refused["op"] == "error", refused
        await other.close()
        await client.close()
