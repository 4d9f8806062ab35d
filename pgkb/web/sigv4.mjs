// AWS Signature Version 4 (AWS4-HMAC-SHA256) with WebCrypto, for the browser and Node.js >= 20.
// It builds the canonical request the way botocore's SigV4Auth does, so a request signed here
// verifies wherever a boto3-signed one does (tests/test_web_console_sigv4.py compares the two).

const ALGORITHM = "AWS4-HMAC-SHA256";
const encoder = new TextEncoder();

function subtle() {
  const c = globalThis.crypto;
  if (!c || !c.subtle) {
    // WebCrypto exists only in secure contexts: http://127.0.0.1 and http://localhost qualify.
    throw new Error("WebCrypto is unavailable: open the console over https or on localhost/127.0.0.1");
  }
  return c.subtle;
}

function toBytes(data) {
  if (data === undefined || data === null) return new Uint8Array(0);
  if (typeof data === "string") return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError("body must be a string, Uint8Array or ArrayBuffer");
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function sha256Hex(data) {
  return hex(await subtle().digest("SHA-256", toBytes(data)));
}

async function hmac(key, message) {
  const k = await subtle().importKey("raw", toBytes(key), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await subtle().sign("HMAC", k, toBytes(message)));
}

// RFC 3986 encoding of UTF-8 bytes: unreserved characters (and those in `safe`) stay, the rest
// become %XX. encodeURIComponent is not enough: it leaves !*'() alone, which AWS encodes.
export function uriEncode(value, safe = "") {
  let out = "";
  for (const byte of encoder.encode(String(value))) {
    const ch = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-_.~]/.test(ch) || (byte < 128 && safe.includes(ch))) out += ch;
    else out += "%" + byte.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

// Remove dot segments and repeated slashes (RFC 3986 5.2.4), as botocore's normalize_url_path.
function normalizePath(path) {
  if (!path) return "/";
  const out = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") out.pop();
    else out.push(seg);
  }
  let result = "/" + out.join("/");
  if (path.endsWith("/") && result !== "/") result += "/";
  return result;
}

// `path` is the path as it goes on the wire (labels already percent-encoded); SigV4 encodes it again.
export function canonicalUri(path) {
  return uriEncode(normalizePath(path), "/");
}

// `query` is a list of [key, value] pairs, not yet encoded.
export function canonicalQuery(query) {
  return (query || [])
    .map(([k, v]) => [uriEncode(k), uriEncode(v ?? "")])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
}

export function amzDate(date) {
  return date.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

// Hop-by-hop and tracing headers that proxies and browsers change in flight: botocore's
// SIGNED_HEADERS_BLACKLIST, so both sign the same set.
const UNSIGNED = new Set([
  "baggage", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
  "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
]);

/**
 * Signs a request and returns the headers to send: the caller's headers plus X-Amz-Date and
 * Authorization (and X-Amz-Security-Token when a session token is given).
 *
 * request: {method, host, path, query: [[k, v], ...], headers: {name: value}, body}
 * credentials: {accessKeyId, secretAccessKey, sessionToken?}
 */
export async function signRequest(request, credentials, { region, service = "bedrock", date = new Date() }) {
  const stamp = amzDate(date);
  const day = stamp.slice(0, 8);
  const headers = { ...(request.headers || {}) };
  for (const name of Object.keys(headers)) {
    if (["x-amz-date", "authorization", "x-amz-security-token"].includes(name.toLowerCase())) {
      delete headers[name];
    }
  }
  headers["X-Amz-Date"] = stamp;
  if (credentials.sessionToken) headers["X-Amz-Security-Token"] = credentials.sessionToken;

  const signed = new Map();
  signed.set("host", request.host);
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (UNSIGNED.has(lower)) continue;
    signed.set(lower, String(value).trim().split(/\s+/).join(" "));
  }
  const names = [...signed.keys()].sort();
  const signedHeaders = names.join(";");
  const canonicalHeaders = names.map((n) => `${n}:${signed.get(n)}\n`).join("");

  const canonical = [
    request.method.toUpperCase(),
    canonicalUri(request.path),
    canonicalQuery(request.query),
    canonicalHeaders,
    signedHeaders,
    await sha256Hex(request.body),
  ].join("\n");
  const scope = `${day}/${region}/${service}/aws4_request`;
  const stringToSign = [ALGORITHM, stamp, scope, await sha256Hex(canonical)].join("\n");

  let key = await hmac("AWS4" + credentials.secretAccessKey, day);
  key = await hmac(key, region);
  key = await hmac(key, service);
  key = await hmac(key, "aws4_request");
  const signature = hex(await hmac(key, stringToSign));

  headers.Authorization =
    `${ALGORITHM} Credential=${credentials.accessKeyId}/${scope}, ` +
    `SignedHeaders=${signedHeaders}, Signature=${signature}`;
  return { headers, signature, canonicalRequest: canonical, stringToSign };
}
