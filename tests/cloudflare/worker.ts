// The edge Worker in front of the backends: continues the caller's trace or starts one (from the
// ray id, so every backend can derive the same trace id), signs what it vouches for in
// `x-integra-edge`, forwards to the origin, and exports its own span as OTLP/HTTP JSON after the
// response (`ctx.waitUntil`). Types (`ExecutionContext`, `request.cf`) from @cloudflare/workers-types.

export interface Env {
  ORIGIN: string; // the backend's base URL, no trailing slash: "https://api.internal.example"
  EDGE_SECRET: string; // the backends' INTEGRA_EDGE_SECRET (a Worker secret, 32+ bytes)
  OTLP_TRACES_URL?: string; // "https://otel-collector.example/v1/traces"; unset: no export
  SERVICE_NAME?: string; // service.name of the Worker's spans
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const RAY = /^[0-9a-fA-F]{16}(-[A-Za-z0-9]{1,8})?$/;
const SAFE = /^[A-Za-z0-9._:-]{1,64}$/; // what a signed field may hold
const encoder = new TextEncoder();

function hex(bytes: ArrayBuffer | Uint8Array): string {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function randomHex(bytes: number): string {
  return hex(crypto.getRandomValues(new Uint8Array(bytes)));
}

// The trace id every hop derives from a ray id: the first 16 bytes of
// SHA-256("cf-ray:v1:" + the full CF-Ray header); bytes 16..24 are this Worker's span id.
export async function deriveFromRay(ray: string): Promise<{ traceId: string; spanId: string }> {
  const digest = hex(await crypto.subtle.digest("SHA-256", encoder.encode("cf-ray:v1:" + ray)));
  return { traceId: digest.slice(0, 32), spanId: digest.slice(32, 48) };
}

function parseTraceparent(value: string | null) {
  const m = value === null ? null : TRACEPARENT.exec(value.trim());
  if (!m || m[1] === "ff" || (m[1] === "00" && m[5] !== undefined)) return null;
  if (/^0+$/.test(m[2]) || /^0+$/.test(m[3])) return null;
  return { traceId: m[2], parentId: m[3], flags: m[4] };
}

export interface EdgeClaims {
  ts: number; // seconds since the Unix epoch
  ray?: string | null; // the user-facing CF-Ray
  tp?: string | null; // the traceparent sent to the origin
  colo?: string | null;
  cc?: string | null; // country
  ip?: string | null; // CF-Connecting-IP
  proto?: string | null; // http | https
}

// `v1;ts=…;ray=…;tp=…;colo=…;cc=…;ip=…;proto=…;sig=<hex HMAC-SHA256 of everything before ;sig=>`
export async function signEdgeHeader(claims: EdgeClaims, secret: string): Promise<string> {
  let payload = `v1;ts=${claims.ts}`;
  const fields: [string, string | null | undefined][] = [
    ["ray", claims.ray], ["tp", claims.tp], ["colo", claims.colo],
    ["cc", claims.cc], ["ip", claims.ip], ["proto", claims.proto],
  ];
  for (const [key, value] of fields) {
    if (value && SAFE.test(value)) payload += `;${key}=${value}`;
  }
  const key = await crypto.subtle.importKey(
    "raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"],
  );
  return `${payload};sig=${hex(await crypto.subtle.sign("HMAC", key, encoder.encode(payload)))}`;
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const start = Date.now();
    const url = new URL(request.url);
    const rayHeader = request.headers.get("cf-ray");
    const ray = rayHeader && RAY.test(rayHeader.trim()) ? rayHeader.trim() : null;
    const incoming = parseTraceparent(request.headers.get("traceparent"));
    let traceId: string, spanId: string, parentId = "", flags = "01", source = "new";
    if (incoming) {
      ({ traceId, flags } = incoming);
      parentId = incoming.parentId;
      spanId = randomHex(8);
      source = "traceparent";
    } else if (ray) {
      ({ traceId, spanId } = await deriveFromRay(ray));
      source = "cf-ray";
    } else {
      traceId = randomHex(16);
      spanId = randomHex(8);
    }
    const traceparent = `00-${traceId}-${spanId}-${flags}`;
    const cf = (request as { cf?: { colo?: string; country?: string } }).cf;
    const headers = new Headers(request.headers);
    headers.set("traceparent", traceparent);
    headers.delete("sentry-trace"); // one context: ours
    headers.set("x-integra-edge", await signEdgeHeader({
      ts: Math.floor(Date.now() / 1000),
      ray,
      tp: traceparent,
      colo: cf?.colo,
      cc: cf?.country ?? request.headers.get("cf-ipcountry"),
      ip: request.headers.get("cf-connecting-ip"),
      proto: url.protocol.replace(":", ""),
    }, env.EDGE_SECRET));

    let response: Response;
    try {
      response = await fetch(env.ORIGIN + url.pathname + url.search, {
        method: request.method,
        headers,
        body: request.body,
        redirect: "manual",
      });
    } catch {
      response = new Response("origin unreachable", { status: 502 });
    }

    if (env.OTLP_TRACES_URL) {
      const attrs: Record<string, string | number | null | undefined> = {
        "http.request.method": request.method,
        "url.path": url.pathname,
        "http.response.status_code": response.status,
        "cloudflare.ray_id": ray,
        "cloudflare.colo": cf?.colo,
        "geo.country.code": cf?.country,
        "integra.trace_id.source": source,
      };
      const span = {
        traceId, spanId, parentSpanId: parentId,
        name: `${request.method} edge`,
        kind: 2, // SERVER
        startTimeUnixNano: `${start}000000`,
        endTimeUnixNano: `${Date.now()}000000`,
        attributes: Object.entries(attrs)
          .filter(([, v]) => v !== undefined && v !== null)
          .map(([key, v]) => ({
            key, value: typeof v === "number" ? { intValue: String(v) } : { stringValue: String(v) },
          })),
        status: { code: response.status >= 500 ? 2 : 0 }, // ERROR : UNSET
      };
      const body = {
        resourceSpans: [{
          resource: { attributes: [{ key: "service.name", value: { stringValue: env.SERVICE_NAME ?? "edge-worker" } }] },
          scopeSpans: [{ scope: { name: "integra-observe-edge" }, spans: [span] }],
        }],
      };
      // After the response: the user does not wait for the export, and a failed export is dropped.
      ctx.waitUntil(fetch(env.OTLP_TRACES_URL, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      }).then((r) => r.body?.cancel(), () => undefined));
    }
    return response;
  },
};
