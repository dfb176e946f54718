// A webhook receiver written the way a Node.js developer would write one from e2a's docs
// alone (docs/delivery.md, docs/events.md): only node's built-in http and crypto modules.
//
//   POST /legacy   a per-agent webhook_url delivery: checks the X-E2A-Auth-* claim
//   POST /v1       a /v1 webhook subscription delivery: checks X-E2A-Signature
//   POST /_config  {"legacy_secrets": [...], "v1_secrets": [...]} (test control)
//   GET  /_results every verification made so far, oldest first (test control)
//
// Started as `node node_webhook_receiver.mjs`; prints {"port": N} on its first line of
// stdout once it listens on 127.0.0.1 (an ephemeral port).
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const LEGACY_MAX_AGE_SECONDS = 300; // "no more than 5 minutes old"
const LEGACY_MAX_FUTURE_SECONDS = 30; // "nor 30 s in the future"
const V1_TOLERANCE_SECONDS = 300; // either direction
const CLAIM_ORDER = [
  "verified",
  "sender",
  "entity-type",
  "domain-check",
  "delegation",
  "timestamp",
  "message-id",
  "body-hash",
];

const config = { legacy_secrets: [], v1_secrets: [] };
const results = [];

/** Constant-time comparison of two lowercase hex strings. */
function hexEqual(a, b) {
  const left = Buffer.from(a, "utf8");
  const right = Buffer.from(b, "utf8");
  return left.length === right.length && timingSafeEqual(left, right);
}

function hmacHex(secret, ...parts) {
  const mac = createHmac("sha256", Buffer.from(secret, "utf8"));
  for (const part of parts) mac.update(part);
  return mac.digest("hex");
}

/** The X-E2A-Auth-* values of a name -> value map, found case-insensitively. */
function claimOf(pairs) {
  const claim = {};
  for (const [name, value] of Object.entries(pairs)) {
    const lower = name.toLowerCase();
    if (lower.startsWith("x-e2a-auth-")) claim[lower.slice("x-e2a-auth-".length)] = value;
  }
  return claim;
}

/** The claim of the HTTP headers: their values are UTF-8 octets, which node reads as Latin-1
 * (docs/delivery.md), so each is turned back into the text that was signed. */
function headerClaim(headers) {
  const claim = claimOf(headers);
  for (const [name, value] of Object.entries(claim)) {
    claim[name] = Buffer.from(value, "latin1").toString("utf8");
  }
  return claim;
}

/** Check one claim (from the HTTP headers or the body's auth_headers); [] when it verifies. */
function checkClaim(claim, rawMessage, bodyMessageId, now) {
  const problems = [];
  for (const name of [...CLAIM_ORDER, "signature"]) {
    if (typeof claim[name] !== "string") problems.push(`missing X-E2A-Auth-${name}`);
  }
  if (problems.length) return problems;
  const delivered = Buffer.from(rawMessage, "base64");
  const bodyHash = createHash("sha256").update(delivered).digest("hex");
  if (!hexEqual(bodyHash, claim["body-hash"])) problems.push("body hash mismatch");
  if (claim["message-id"] !== bodyMessageId) problems.push("message id mismatch");
  const signed = Date.parse(claim.timestamp);
  if (Number.isNaN(signed)) problems.push(`unreadable timestamp ${claim.timestamp}`);
  else if (now - signed > LEGACY_MAX_AGE_SECONDS * 1000) problems.push("timestamp too old");
  else if (signed - now > LEGACY_MAX_FUTURE_SECONDS * 1000) problems.push("timestamp in the future");
  const canonical = Buffer.from(CLAIM_ORDER.map((name) => claim[name]).join("\n"), "utf8");
  const matched = config.legacy_secrets.filter((secret) =>
    hexEqual(hmacHex(secret, canonical), claim.signature),
  );
  if (!matched.length) problems.push("signature mismatch");
  return problems;
}

function verifyLegacy(headers, raw) {
  const now = Date.now();
  let body;
  try {
    body = JSON.parse(raw.toString("utf8"));
  } catch {
    return { ok: false, problems: ["body is not JSON"] };
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    return { ok: false, problems: ["body is not a JSON object"] };
  }
  if (typeof body.raw_message !== "string") return { ok: false, problems: ["no raw_message"] };
  // Both copies of the claim must verify: the HTTP headers and the body's auth_headers.
  const headerClaimed = headerClaim(headers);
  const headerProblems = checkClaim(headerClaimed, body.raw_message, body.message_id, now);
  const bodyProblems = checkClaim(
    claimOf(body.auth_headers || {}),
    body.raw_message,
    body.message_id,
    now,
  );
  const problems = [
    ...headerProblems.map((p) => `headers: ${p}`),
    ...bodyProblems.map((p) => `auth_headers: ${p}`),
  ];
  return {
    ok: problems.length === 0,
    problems,
    message_id: body.message_id,
    sender: claimOf(body.auth_headers || {}).sender,
    header_sender: headerClaimed.sender,
    delivery_id: headers["x-e2a-delivery-id"],
    attempt: headers["x-e2a-delivery-attempt"],
  };
}

/** Parse `t=<unix seconds>,v1=<hex>[,v1=<hex>]`. */
function parseSignatureHeader(value) {
  const parsed = { t: [], v1: [] };
  for (const item of value.split(",")) {
    const at = item.indexOf("=");
    if (at < 0) continue;
    const key = item.slice(0, at).trim();
    const val = item.slice(at + 1).trim();
    if (key === "t" || key === "v1") parsed[key].push(val);
  }
  return parsed;
}

function verifyV1(headers, raw) {
  const header = headers["x-e2a-signature"];
  if (typeof header !== "string") return { ok: false, problems: ["no X-E2A-Signature"] };
  const { t, v1 } = parseSignatureHeader(header);
  const problems = [];
  if (t.length !== 1 || !/^[0-9]+$/.test(t[0])) {
    return { ok: false, problems: [`bad t= in ${header}`] };
  }
  const skew = Math.abs(Date.now() / 1000 - Number(t[0]));
  if (skew > V1_TOLERANCE_SECONDS) problems.push(`timestamp outside tolerance (${skew} s)`);
  // Which configured secrets verify at least one v1 (two during a rotation's grace).
  const matched = config.v1_secrets.filter((secret) => {
    const expected = hmacHex(secret, Buffer.from(`${t[0]}.`, "utf8"), raw);
    return v1.some((candidate) => hexEqual(expected, candidate));
  });
  if (!matched.length) problems.push("no v1 signature verifies");
  // For each v1 in the order sent, the index of the configured secret it verifies under.
  const signedBy = v1.map((candidate) =>
    config.v1_secrets.findIndex((secret) =>
      hexEqual(hmacHex(secret, Buffer.from(`${t[0]}.`, "utf8"), raw), candidate),
    ),
  );
  let body = null;
  try {
    body = JSON.parse(raw.toString("utf8"));
  } catch {
    problems.push("body is not JSON");
  }
  return {
    ok: problems.length === 0,
    problems,
    signatures: v1.length,
    matched_secrets: matched,
    signed_by: signedBy,
    event_id: body && body.id,
    type: body && body.type,
    event_type_header: headers["x-e2a-event-type"],
    schema_version_header: headers["x-e2a-schema-version"],
    user_agent: headers["user-agent"],
  };
}

function answer(response, status, payload) {
  const text = JSON.stringify(payload);
  response.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  });
  response.end(text);
}

const server = createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const raw = Buffer.concat(chunks);
    if (request.method === "GET" && request.url === "/_results") {
      answer(response, 200, results);
    } else if (request.method === "POST" && request.url === "/_config") {
      Object.assign(config, JSON.parse(raw.toString("utf8")));
      answer(response, 200, config);
    } else if (request.method === "POST" && (request.url === "/legacy" || request.url === "/v1")) {
      const verify = request.url === "/legacy" ? verifyLegacy : verifyV1;
      const result = { path: request.url, ...verify(request.headers, raw) };
      results.push(result);
      answer(response, result.ok ? 200 : 401, { ok: result.ok });
    } else {
      answer(response, 404, { error: "not found" });
    }
  });
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
