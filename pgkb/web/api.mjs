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
};

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
    const text = await response.text();
    return text ? JSON.parse(text) : {};
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
