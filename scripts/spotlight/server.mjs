// Runs Spotlight (Sentry's dev sidecar, the pinned one installed by scripts/install-spotlight.sh) as a
// test server, and records everything it receives as JSON lines in a file.
//
//   node scripts/spotlight/server.mjs SPOTLIGHT_INSTALL_DIR PORT EVENTS_JSONL
//
// Why not the `spotlight` CLI: its entry point (dist/run.js) first initialises Spotlight's own Sentry
// SDK, which sends Spotlight's telemetry to sentry.io, and its server listens on every interface.
// Here Spotlight's own server code (setupSpotlight: the same Hono app, routes and envelope parser,
// minus the web UI) runs without that telemetry, bound to 127.0.0.1 only.
//
// Recording: one JSON line per POSTed payload (see docs/test-servers-notes.md, "Spotlight"), written
// synchronously *before* Spotlight sends the HTTP response, so once a client's POST has returned its
// line is in the file. The recorder is subscribed before the port opens, so nothing is missed.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [installDir, portArg, eventsPath] = process.argv.slice(2);
if (!installDir || !portArg || !eventsPath) {
  console.error("usage: node server.mjs SPOTLIGHT_INSTALL_DIR PORT EVENTS_JSONL");
  process.exit(2);
}
const HOST = "127.0.0.1";
const port = Number(portArg);
const dist = path.join(installDir, "node_modules", "@spotlightjs", "spotlight", "dist", "server");
const load = (rel) => import(pathToFileURL(path.join(dist, rel)).href);

// Spotlight's server calls `server.listen(port, undefined, cb)` (all interfaces): pin it to loopback.
const origListen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" && args[1] === undefined) args[1] = HOST;
  return origListen.apply(this, args);
};

const { setupSpotlight } = await load("main.js");
const { getBuffer } = await load("utils/getBuffer.js");

const fd = fs.openSync(eventsPath, "a");
let seq = 0;
const writeLine = (obj) => fs.writeSync(fd, JSON.stringify(obj) + "\n");

// A Sentry envelope, parsed as the protocol says (an item's payload is `length` bytes if its header
// has a length, else up to the next newline); bodies kept exactly as sent (Spotlight's own parse
// adds a "type" field to every item payload, so it is not used for the bodies).
function parseEnvelope(buf) {
  let pos = 0;
  const line = (len) => {
    let end = len != null ? pos + len : buf.indexOf(10, pos);
    if (end < 0 || end > buf.length) end = buf.length;
    const out = buf.subarray(pos, end);
    pos = end + 1;
    return out;
  };
  const json = (b) => JSON.parse(b.toString("utf8"));
  try {
    const header = json(line());
    const items = [];
    while (pos < buf.length) {
      const raw = line();
      if (raw.length === 0 && pos >= buf.length) break; // trailing newline
      const itemHeader = json(raw);
      const payload = line(typeof itemHeader.length === "number" ? itemHeader.length : null);
      let body;
      try {
        body = json(payload);
      } catch {
        body = null;
      }
      const item = { header: itemHeader, body };
      if (body === null) item.body_base64 = payload.toString("base64");
      items.push(item);
    }
    return { header, items };
  } catch (err) {
    return { header: null, items: [], parse_error: String(err) };
  }
}

function record(data, contentType, spotlightId, userAgent) {
  seq += 1;
  writeLine({
    seq,
    received_at_ms: Date.now(),
    accepted: spotlightId != null,
    spotlight_id: spotlightId,
    content_type: contentType,
    user_agent: userAgent ?? null,
    size: data.length,
    ...parseEnvelope(data),
  });
}

// Every payload Spotlight stores goes through its ring buffer; a subscriber sees each one once.
const buffer = getBuffer();
let drained = 0;
const reader = buffer.subscribe((container) => {
  drained += 1;
  const parsed = container.getParsedEnvelope();
  const id = parsed?.envelope?.[0]?.__spotlight_envelope_id?.toString() ?? null;
  record(Buffer.from(container.getData()), container.getContentType(), id, container.senderUserAgent);
});

// Called by Spotlight's POST handler right after it stored the payload (or dropped it: no
// Content-Type) and before it answers: drain the subscription now, synchronously.
function incomingPayload(binaryBody) {
  const before = drained;
  buffer.stream(reader);
  if (drained === before) record(Buffer.from(binaryBody, "binary"), null, null, null);
}

const server = await setupSpotlight({ port, isStandalone: true, incomingPayload });
if (!server) {
  console.error(`[spotlight-test] port ${port} already serves a Spotlight; refusing to share it`);
  process.exit(1);
}
const addr = server.address();
if (addr?.address !== HOST) {
  console.error(`[spotlight-test] listening on ${JSON.stringify(addr)}, expected ${HOST}; exiting`);
  process.exit(1);
}
console.error(`[spotlight-test] Spotlight listening on http://${HOST}:${addr.port}, recording to ${eventsPath}`);
// Every line is written synchronously, so there is nothing to flush: stop at once (Spotlight's own
// graceful shutdown lingers ~2 s).
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
