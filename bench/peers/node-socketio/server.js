// The benchmark's chat written the usual Node.js way: Socket.IO 4 with the
// Redis adapter (@socket.io/redis-adapter on node-redis), one process per port.
//
//   node server.js --port 9001 --redis-url redis://127.0.0.1:6380/0 --name node1
//   node server.js --port 9001 --redis-socket /path/redis.sock --name node1
//
// Run several behind HAProxy (cookie stickiness, as Socket.IO's docs ask for
// the polling transport); the adapter relays every room emit through Redis
// pub/sub so each process delivers to its own clients. The same features as
// bench/peers/socketio_redis.py, and nothing more:
//
// - login: the user name in the connect auth ({user: NAME}) or the query
//   string (?user=NAME); the same 1-32 name rule as chatfleet. No password,
//   no session store, nothing stored: a peer for measuring fan-out.
// - "join" {room}: enters the room, acknowledges with {room, instance}, and
//   tells the room "joined" {room, user}.
// - "chat" {room, text}: a member's text (at most 4,000 characters) is
//   emitted to the whole room, on every process, as "chat" {room, user, text, ts}.
//
// GET /healthz answers "ok" for HAProxy's checks.
"use strict";

const http = require("node:http");
const { parseArgs } = require("node:util");
const { createClient } = require("redis");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");

const NAME = /^[A-Za-z0-9._-]{1,32}$/;
const MAX_TEXT_CHARS = 4000; // chatfleet's limit (handlers/frames.py)

const { values: args } = parseArgs({
  options: {
    port: { type: "string" },
    address: { type: "string", default: "127.0.0.1" },
    "redis-url": { type: "string" },
    "redis-socket": { type: "string" }, // a Unix socket instead of the URL
    key: { type: "string", default: "bench-node" }, // the adapter's channel prefix
    name: { type: "string", default: "node" },
  },
});

function userOf(socket) {
  const auth = socket.handshake.auth || {};
  const name = typeof auth.user === "string" ? auth.user : socket.handshake.query.user;
  return typeof name === "string" && NAME.test(name) ? name : null;
}

async function main() {
  const pubClient = createClient(args["redis-socket"]
    ? { socket: { path: args["redis-socket"] } }
    : { url: args["redis-url"] });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = http.createServer((req, res) => {
    if (req.url === "/healthz") {
      res.writeHead(200, { "Content-Type": "text/plain" }).end("ok");
    } else {
      res.writeHead(404).end();
    }
  });
  const io = new Server(httpServer, {
    adapter: createAdapter(pubClient, subClient, { key: args.key }),
  });

  io.use((socket, next) => {
    const user = userOf(socket);
    if (user === null) return next(new Error("bad_user"));
    socket.data.user = user;
    next();
  });

  io.on("connection", (socket) => {
    socket.on("join", (data, ack) => {
      const room = data && data.room;
      const reply = typeof ack === "function" ? ack : () => {};
      if (typeof room !== "string" || !NAME.test(room)) return reply(null);
      socket.join(room);
      socket.to(room).emit("joined", { room, user: socket.data.user });
      reply({ room, instance: args.name });
    });

    socket.on("chat", (data) => {
      if (!data || typeof data !== "object") return;
      const { room, text } = data;
      if (typeof room !== "string" || !socket.rooms.has(room)) return;
      if (typeof text !== "string" || text.length > MAX_TEXT_CHARS) return;
      io.to(room).emit("chat", { room, user: socket.data.user, text, ts: Date.now() / 1000 });
    });
  });

  httpServer.listen(Number(args.port), args.address, () => {
    console.log(`${args.name} listening on ${args.address}:${args.port}`);
  });

  const stop = () => {
    io.close();
    Promise.allSettled([pubClient.quit(), subClient.quit()]).then(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
