// A small client for the Bedrock operations the console uses, over the same wire API as boto3
// (rest-json, SigV4 with the signing name "bedrock"). No private endpoints.

import { signRequest, uriEncode } from "./sigv4.mjs";

// Operation -> [HTTP method, request URI] from botocore's bedrock-agent / bedrock-agent-runtime models.
export const OPERATIONS = {
  ListKnowledgeBases: ["POST", "/knowledgebases/"],
  GetKnowledgeBase: ["GET", "/knowledgebases/{knowledgeBaseId}"],
  ListDataSources: ["POST", "/knowledgebases/{knowledgeBaseId}/datasources/"],
  GetDataSource: ["GET", "/knowledgebases/{knowledgeBaseId}/datasources/{dataSourceId}"],
  ListIngestionJobs: ["POST", "/knowledgebases/{knowledgeBaseId}/datasources/{dataSourceId}/ingestionjobs/"],
  GetIngestionJob: [
    "GET",
    "/knowledgebases/{knowledgeBaseId}/datasources/{dataSourceId}/ingestionjobs/{ingestionJobId}",
  ],
  StartIngestionJob: ["PUT", "/knowledgebases/{knowledgeBaseId}/datasources/{dataSourceId}/ingestionjobs/"],
  Retrieve: ["POST", "/knowledgebases/{knowledgeBaseId}/retrieve"],
  RetrieveAndGenerate: ["POST", "/retrieveAndGenerate"],
  AgenticRetrieveStream: ["POST", "/agenticRetrieveStream"],
};

// Bytes of an AWS event stream (application/vnd.amazon.eventstream) -> [{headers, payload}].
// Each message: total length, headers length, prelude CRC, headers, payload, message CRC (the CRCs
// are left to TCP here). Header values of every type are read; strings are kept.
const HEADER_SIZES = { 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16 };

export function decodeEventStream(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = new TextDecoder();
  const messages = [];
  for (let off = 0; off + 16 <= bytes.length; ) {
    const total = view.getUint32(off);
    const headersEnd = off + 12 + view.getUint32(off + 4);
    const headers = {};
    for (let h = off + 12; h < headersEnd; ) {
      const name = text.decode(bytes.subarray(h + 1, h + 1 + bytes[h]));
      h += 1 + bytes[h];
      const type = bytes[h++];
      if (type === 6 || type === 7) {
        const len = view.getUint16(h);
        if (type === 7) headers[name] = text.decode(bytes.subarray(h + 2, h + 2 + len));
        h += 2 + len;
      } else {
        h += HEADER_SIZES[type] || 0; // 0 / 1: boolean true / false, no value bytes
      }
    }
    const payload = bytes.subarray(headersEnd, off + total - 4);
    messages.push({ headers, payload: payload.length ? JSON.parse(text.decode(payload)) : {} });
    off += total;
  }
  return messages;
}

export class ApiError extends Error {
  constructor(code, message, status, requestId) {
    super(message);
    this.code = code;
    this.status = status;
    this.requestId = requestId;
  }

  // One readable line, e.g. "ValidationException: numberOfResults ... (HTTP 400)".
  toString() {
    const status = this.status ? ` (HTTP ${this.status})` : "";
    return `${this.code}: ${this.message}${status}`;
  }
}

// Path labels are encoded like botocore does (everything but unreserved characters).
export function buildPath(template, params) {
  const used = new Set();
  const path = template.replace(/\{(\w+)\}/g, (_, name) => {
    if (params[name] === undefined || params[name] === null || params[name] === "") {
      throw new ApiError("ParamValidationError", `Missing required parameter ${name}`, 0, "");
    }
    used.add(name);
    return uriEncode(params[name]);
  });
  return { path, used };
}

async function errorFrom(response) {
  const requestId = response.headers.get("x-amzn-requestid") || "";
  let code = (response.headers.get("x-amzn-errortype") || "").split(":")[0];
  let message = "";
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    message = body.message || body.Message || "";
    if (!code && body.__type) code = String(body.__type).split("#").pop();
  } catch {
    message = text.slice(0, 300);
  }
  return new ApiError(code || `HTTP${response.status}`, message || response.statusText, response.status, requestId);
}

export class BedrockClient {
  /**
   * origin: e.g. "http://127.0.0.1:8400"; credentials: {accessKeyId, secretAccessKey} or null to
   * send unsigned requests (a server started with --no-auth).
   */
  constructor({ origin, region = "us-east-1", credentials = null, fetchFn = globalThis.fetch.bind(globalThis) }) {
    this.origin = origin.replace(/\/$/, "");
    this.host = new URL(this.origin).host;
    this.region = region;
    this.credentials = credentials;
    this.fetch = fetchFn;
  }

  async call(operation, params = {}) {
    const response = await this.send(operation, params);
    const text = await response.text();
    return text ? JSON.parse(text) : {};
  }

  // An event-stream operation: its events as [{type, body}]; an in-stream exception is thrown.
  async callStream(operation, params = {}) {
    const response = await this.send(operation, params);
    const events = [];
    for (const { headers, payload } of decodeEventStream(new Uint8Array(await response.arrayBuffer()))) {
      const kind = headers[":message-type"];
      if (kind === "exception") {
        throw new ApiError(headers[":exception-type"] || "StreamException", payload.message || "", 0, "");
      }
      if (kind === "error") throw new ApiError(headers[":error-code"] || "StreamError", headers[":error-message"] || "", 0, "");
      events.push({ type: headers[":event-type"], body: payload });
    }
    return events;
  }

  async send(operation, params) {
    const def = OPERATIONS[operation];
    if (!def) throw new ApiError("UnknownOperation", `The console does not know ${operation}`, 0, "");
    const [method, template] = def;
    const { path, used } = buildPath(template, params);
    const headers = {};
    let body;
    if (method === "POST" || method === "PUT") {
      const members = {};
      for (const [k, v] of Object.entries(params)) {
        if (!used.has(k) && v !== undefined && v !== null) members[k] = v;
      }
      // The exact bytes that are hashed for the signature are the bytes sent.
      body = new TextEncoder().encode(JSON.stringify(members));
      headers["Content-Type"] = "application/json";
    }
    let sent = headers;
    if (this.credentials && this.credentials.accessKeyId) {
      const signed = await signRequest(
        { method, host: this.host, path, query: [], headers, body },
        this.credentials,
        { region: this.region, service: "bedrock" },
      );
      sent = signed.headers;
    }
    let response;
    try {
      response = await this.fetch(this.origin + path, { method, headers: sent, body, cache: "no-store" });
    } catch (err) {
      throw new ApiError("NetworkError", `Cannot reach ${this.origin}: ${err.message || err}`, 0, "");
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  // Follows nextToken through every page of a List operation and concatenates `key`.
  async listAll(operation, params, key, maxPages = 50) {
    const items = [];
    let nextToken;
    for (let page = 0; page < maxPages; page++) {
      const out = await this.call(operation, { ...params, nextToken });
      items.push(...(out[key] || []));
      nextToken = out.nextToken;
      if (!nextToken) break;
    }
    return items;
  }
}
