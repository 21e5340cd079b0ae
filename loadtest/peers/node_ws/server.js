// Peer for `hearth loadtest --peer node-ws`: a plain Node.js `ws` server that speaks the
// minimal subset of Hearth's JSON protocol the scenarios use, and broadcasts naively
// (one ws.send per recipient, in memory, nothing persisted).
//
//   GET  /readyz                    -> 200
//   POST /api/v1/loadtest/provision {users, room_size} -> 201 {community_id, users, channels}
//   ws   /gateway: hello -> identify -> ready; heartbeat -> heartbeat_ack;
//        send_message -> ok {type: message} and dispatch message_create (with s) to
//        every connected member of the channel, the sender included.
//
// Each message is serialized once; each recipient's frame is that body spliced behind
// its own session sequence number (what a careful naive server does).
"use strict";

const http = require("http");
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] || process.env.PORT || 0);
const host = process.argv[3] || "127.0.0.1";

let nextId = 1;
const users = new Map(); // token -> {id, username, channel}
const channels = new Map(); // id -> {id, seq, members: Set<session>}

function provision(body) {
  const n = Number(body.users), k = Number(body.room_size);
  if (!(n >= 1 && k >= 1 && k <= n)) return [400, { error: { code: "invalid_argument", message: "users/room_size" } }];
  const communityId = nextId++;
  const out = { community_id: communityId, users: [], channels: [] };
  let room = null;
  for (let i = 0; i < n; i++) {
    if (i % k === 0) {
      room = { id: nextId++, seq: 0, members: new Set(), memberIds: [] };
      channels.set(room.id, room);
      out.channels.push({ id: room.id, member_ids: room.memberIds });
    }
    const id = nextId++;
    const token = "pw." + id + "." + Math.random().toString(36).slice(2);
    const user = { id, username: "lt" + id, channel: room };
    users.set(token, user);
    room.memberIds.push(id);
    out.users.push({ id, username: user.username, token });
  }
  return [201, out];
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/readyz") {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end('{"status":"ok"}');
  }
  if (req.method === "POST" && req.url === "/api/v1/loadtest/provision") {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let status, body;
      try { [status, body] = provision(JSON.parse(Buffer.concat(chunks).toString())); }
      catch (e) { [status, body] = [400, { error: { code: "invalid_frame", message: String(e) } }]; }
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    });
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ server, path: "/gateway", perMessageDeflate: false, maxPayload: 65536 });
const HELLO = JSON.stringify({ op: "hello", heartbeat_interval_ms: 30000, protocol_version: 1,
  limits: { requests_per_window: 1000000, rate_window_ms: 10000, heartbeat_interval_ms: 30000 } });

wss.on("connection", (ws) => {
  const session = { ws, s: 0, user: null };
  ws.send(HELLO);
  ws.on("message", (data) => {
    let f;
    try { f = JSON.parse(data); } catch (e) { return ws.send('{"op":"error","id":null,"code":"invalid_frame","message":"bad json"}'); }
    if (f.op === "heartbeat") return ws.send('{"op":"heartbeat_ack"}');
    if (f.op === "identify") {
      const user = users.get(f.token);
      if (!user) return ws.close(4004, "authentication failed");
      session.user = user;
      user.channel.members.add(session);
      const ch = user.channel;
      return ws.send(JSON.stringify({ op: "ready", session_id: "s" + user.id,
        user: { id: user.id, username: user.username, display_name: user.username, bot: true },
        communities: [{ community: { id: 1, name: "loadtest", owner_id: 1 }, role: "member",
          channels: [{ id: ch.id, kind: "text", name: "room", private: true, last_seq: ch.seq }] }],
        private_channels: [], read_states: [] }));
    }
    if (f.op === "send_message") {
      const user = session.user;
      if (!user) return ws.send(JSON.stringify({ op: "error", id: f.id, code: "not_ready", message: "identify first" }));
      const ch = user.channel;
      if (ch.id !== f.channel_id) return ws.send(JSON.stringify({ op: "error", id: f.id, code: "not_found", message: "no such channel" }));
      ch.seq += 1;
      const message = { id: nextId++, channel_id: ch.id, seq: ch.seq,
        author: { id: user.id, username: user.username, display_name: user.username, bot: true },
        content: f.content, created_at: Date.now(), nonce: f.nonce ?? null };
      const body = '{"t":"message_create","message":' + JSON.stringify(message) + "}";
      for (const member of ch.members) {
        member.s += 1;
        member.ws.send('{"op":"dispatch","s":' + member.s + ',"d":' + body + "}");
      }
      return ws.send('{"op":"ok","id":' + f.id + ',"data":{"type":"message","message":' + JSON.stringify(message) + "}}");
    }
    if (typeof f.id === "number") ws.send(JSON.stringify({ op: "error", id: f.id, code: "invalid_frame", message: "not supported by this peer" }));
  });
  ws.on("close", () => { if (session.user) session.user.channel.members.delete(session); });
  ws.on("error", () => {});
});

server.listen(port, host, () => {
  console.log("node-ws peer listening on " + host + ":" + server.address().port);
});
