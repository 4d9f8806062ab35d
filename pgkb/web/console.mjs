// The pgkb console: knowledge bases, data sources, ingestion jobs, Retrieve and RetrieveAndGenerate,
// over the Bedrock API.
// Every value from the server is inserted with textContent (never as HTML).

import { ApiError, BedrockClient } from "./api.mjs";

const $ = (id) => document.getElementById(id);
const STORE = { akid: "pgkb.accessKeyId", secret: "pgkb.secretAccessKey", region: "pgkb.region" };
const TERMINAL = new Set(["COMPLETE", "FAILED", "STOPPED"]);
const POLL_MS = 1000;

const state = { client: null, kbId: null, dsId: null, jobs: [], pollToken: 0, view: 0, sessionId: null };

// -- small DOM helpers ------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function fmtTime(value) {
  if (value === undefined || value === null || value === "") return "";
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function fmtDuration(from, to) {
  const toMs = (v) => (typeof v === "number" ? v * 1000 : new Date(v).getTime());
  const ms = toMs(to) - toMs(from);
  if (!Number.isFinite(ms) || ms < 0) return "";
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

function statusClass(status) {
  if (["ACTIVE", "AVAILABLE", "COMPLETE"].includes(status)) return "status-ok";
  if (["FAILED", "DELETE_UNSUCCESSFUL", "STOPPED", "DELETING"].includes(status)) return "status-bad";
  return "status-busy";
}

function badge(status) {
  return el("span", { class: `badge ${statusClass(status)}`, text: status || "?" });
}

function fillDetails(dl, rows) {
  dl.replaceChildren();
  for (const [term, value] of rows) {
    if (value === undefined || value === null || value === "") continue;
    dl.append(el("dt", { text: term }), el("dd", { text: String(value) }));
  }
}

// -- errors -----------------------------------------------------------------------------------
function showError(err) {
  const box = $("error");
  let line = err instanceof ApiError ? err.toString() : `Error: ${err && err.message ? err.message : err}`;
  if (err instanceof ApiError && err.status === 403 && !hasKey()) {
    line += "\nThis server requires signed requests: paste an access key from `pgkb keys create --json` above.";
  }
  if (err instanceof ApiError && err.requestId) line += `\nrequest id ${err.requestId}`;
  box.textContent = line;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function guarded(fn) {
  try {
    clearError();
    return await fn();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

// -- credentials (sessionStorage only: gone when the tab closes) ------------------------------
function hasKey() {
  return Boolean(sessionStorage.getItem(STORE.akid) && sessionStorage.getItem(STORE.secret));
}

function makeClient() {
  const region = sessionStorage.getItem(STORE.region) || "us-east-1";
  const credentials = hasKey()
    ? { accessKeyId: sessionStorage.getItem(STORE.akid), secretAccessKey: sessionStorage.getItem(STORE.secret) }
    : null;
  state.client = new BedrockClient({ origin: location.origin, region, credentials });
  const label = $("auth-state");
  if (credentials) {
    label.textContent = `Signing as ${credentials.accessKeyId} (${region})`;
    label.className = "auth-state on";
  } else {
    label.textContent = "No key: requests are unsigned (a server started with --no-auth)";
    label.className = "auth-state";
  }
}

function initCredentials() {
  $("akid").value = sessionStorage.getItem(STORE.akid) || "";
  $("region").value = sessionStorage.getItem(STORE.region) || "us-east-1";
  // The secret is never written back into the page; a placeholder says one is stored.
  if (sessionStorage.getItem(STORE.secret)) $("secret").placeholder = "stored for this tab";
  $("creds").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const akid = $("akid").value.trim();
    const secret = $("secret").value.trim();
    const region = $("region").value.trim() || "us-east-1";
    sessionStorage.setItem(STORE.region, region);
    // A different key id without a new secret must not be paired with the old key's secret.
    if (akid !== sessionStorage.getItem(STORE.akid) && !secret) sessionStorage.removeItem(STORE.secret);
    if (akid) sessionStorage.setItem(STORE.akid, akid);
    else sessionStorage.removeItem(STORE.akid);
    if (secret) sessionStorage.setItem(STORE.secret, secret);
    if (!akid) sessionStorage.removeItem(STORE.secret);
    $("secret").value = "";
    $("secret").placeholder = hasKey() ? "stored for this tab" : "";
    makeClient();
    loadKbs();
  });
  $("forget").addEventListener("click", () => {
    for (const k of Object.values(STORE)) sessionStorage.removeItem(k);
    $("akid").value = "";
    $("secret").value = "";
    $("secret").placeholder = "";
    $("region").value = "us-east-1";
    makeClient();
  });
  makeClient();
}

// -- navigation state in the URL fragment (#kb=ID&ds=ID): reload-safe, never sent to the server --
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  return { kb: p.get("kb"), ds: p.get("ds") };
}

function writeHash() {
  const p = new URLSearchParams();
  if (state.kbId) p.set("kb", state.kbId);
  if (state.dsId) p.set("ds", state.dsId);
  history.replaceState(null, "", p.toString() ? `#${p}` : location.pathname);
}

// -- knowledge bases --------------------------------------------------------------------------
async function loadKbs() {
  const list = $("kbs");
  await guarded(async () => {
    const kbs = await state.client.listAll("ListKnowledgeBases", { maxResults: 100 }, "knowledgeBaseSummaries");
    kbs.sort((a, b) => String(a.name).localeCompare(String(b.name)));
    list.replaceChildren(
      ...kbs.map((kb) =>
        el(
          "li",
          {},
          el(
            "button",
            {
              type: "button",
              "data-kb-id": kb.knowledgeBaseId,
              "aria-current": kb.knowledgeBaseId === state.kbId ? "true" : "false",
              onclick: () => selectKb(kb.knowledgeBaseId),
            },
            el("span", { class: "kb-title", text: kb.name }),
            el("span", { class: "kb-meta mono", text: kb.knowledgeBaseId }),
            " ",
            el("span", { class: `kb-meta ${statusClass(kb.status)}`, text: kb.status }),
          ),
        ),
      ),
    );
    $("kbs-empty").hidden = kbs.length > 0;
    const wanted = readHash();
    if (!state.kbId && wanted.kb && kbs.some((k) => k.knowledgeBaseId === wanted.kb)) {
      await selectKb(wanted.kb, wanted.ds);
    }
  });
}

function kbDetailRows(kb) {
  const vec = (kb.knowledgeBaseConfiguration || {}).vectorKnowledgeBaseConfiguration || {};
  const modelArn = vec.embeddingModelArn || "";
  const dims = ((vec.embeddingModelConfiguration || {}).bedrockEmbeddingModelConfiguration || {}).dimensions;
  const storage = kb.storageConfiguration || {};
  const rds = storage.rdsConfiguration || {};
  const fm = rds.fieldMapping || {};
  return [
    ["Id", kb.knowledgeBaseId],
    ["ARN", kb.knowledgeBaseArn],
    ["Embedding model", modelArn.includes("/") ? modelArn.split("/").pop() : modelArn],
    ["Model ARN", modelArn],
    ["Dimensions", dims],
    ["Storage", storage.type],
    ["Database", rds.databaseName],
    ["Table", rds.tableName],
    ["Primary key field", fm.primaryKeyField],
    ["Vector field", fm.vectorField],
    ["Text field", fm.textField],
    ["Metadata field", fm.metadataField],
    ["Custom metadata field", fm.customMetadataField],
    ["Role ARN", kb.roleArn],
    ["Created", fmtTime(kb.createdAt)],
    ["Updated", fmtTime(kb.updatedAt)],
    ["Failure reasons", (kb.failureReasons || []).join("; ")],
  ];
}

async function selectKb(kbId, dsId = null) {
  const view = ++state.view;
  state.pollToken++;
  const sameKb = state.kbId === kbId;
  state.kbId = kbId;
  state.dsId = null;
  writeHash();
  for (const b of $("kbs").querySelectorAll("button")) {
    b.setAttribute("aria-current", b.dataset.kbId === kbId ? "true" : "false");
  }
  $("ds").hidden = true;
  if (!sameKb) {
    newConversation(); // a session belongs to one knowledge base
    $("results").replaceChildren();
    $("query-state").textContent = "";
  }
  await guarded(async () => {
    const [{ knowledgeBase: kb }, sources] = await Promise.all([
      state.client.call("GetKnowledgeBase", { knowledgeBaseId: kbId }),
      state.client.listAll("ListDataSources", { knowledgeBaseId: kbId, maxResults: 100 }, "dataSourceSummaries"),
    ]);
    if (view !== state.view) return;
    state.kbType = (kb.knowledgeBaseConfiguration || {}).type || "VECTOR";
    $("welcome").hidden = true;
    $("kb").hidden = false;
    $("query").hidden = false;
    $("sources").hidden = false;
    $("kb-name").textContent = kb.name;
    $("kb-status").replaceWith(Object.assign(badge(kb.status), { id: "kb-status" }));
    $("kb-description").textContent = kb.description || "";
    fillDetails($("kb-details"), kbDetailRows(kb));
    renderSources(sources);
    if (dsId && sources.some((s) => s.dataSourceId === dsId)) await selectDs(dsId);
  });
}

// -- data sources -----------------------------------------------------------------------------
function renderSources(sources) {
  const rows = sources.map((ds) =>
    el(
      "tr",
      { class: "selectable", "data-ds-id": ds.dataSourceId, "data-selected": ds.dataSourceId === state.dsId ? "true" : "false" },
      el("td", {}, el("button", { type: "button", class: "link", text: ds.name, onclick: () => selectDs(ds.dataSourceId) })),
      el("td", { class: "mono", text: ds.dataSourceId }),
      el("td", {}, badge(ds.status)),
      el("td", { text: fmtTime(ds.updatedAt) }),
    ),
  );
  $("ds-rows").replaceChildren(...rows);
  $("ds-empty").hidden = sources.length > 0;
}

function sourceRows(ds) {
  const cfg = ds.dataSourceConfiguration || {};
  const s3 = cfg.s3Configuration || {};
  const ingest = ds.vectorIngestionConfiguration || {};
  const chunking = (ingest.chunkingConfiguration || {}).chunkingStrategy;
  const other = Object.fromEntries(Object.entries(cfg).filter(([k]) => k !== "type" && k !== "s3Configuration"));
  return [
    ["Id", ds.dataSourceId],
    ["Type", cfg.type],
    ["Status", ds.status],
    ["Bucket", s3.bucketArn],
    ["Prefixes", (s3.inclusionPrefixes || []).join(", ")],
    ["Configuration", Object.keys(other).length ? JSON.stringify(other) : ""],
    ["Chunking", chunking || "default (FIXED_SIZE)"],
    ["Deletion policy", ds.dataDeletionPolicy],
    ["Created", fmtTime(ds.createdAt)],
    ["Updated", fmtTime(ds.updatedAt)],
    ["Failure reasons", (ds.failureReasons || []).join("; ")],
  ];
}

async function selectDs(dsId) {
  const view = state.view;
  state.pollToken++;
  state.dsId = dsId;
  writeHash();
  for (const tr of $("ds-rows").querySelectorAll("tr")) {
    tr.dataset.selected = tr.dataset.dsId === dsId ? "true" : "false";
  }
  await guarded(async () => {
    const { dataSource: ds } = await state.client.call("GetDataSource", { knowledgeBaseId: state.kbId, dataSourceId: dsId });
    if (view !== state.view) return;
    $("ds").hidden = false;
    $("ds-name").textContent = `Data source: ${ds.name}`;
    fillDetails($("ds-details"), sourceRows(ds));
    await loadJobs();
  });
}

// -- ingestion jobs ---------------------------------------------------------------------------
const STAT_KEYS = [
  "numberOfDocumentsScanned",
  "numberOfMetadataDocumentsScanned",
  "numberOfNewDocumentsIndexed",
  "numberOfModifiedDocumentsIndexed",
  "numberOfMetadataDocumentsModified",
  "numberOfDocumentsDeleted",
  "numberOfDocumentsFailed",
];

function renderJobs() {
  const rows = state.jobs.map((job) => {
    const stats = job.statistics || {};
    return el(
      "tr",
      { "data-job-id": job.ingestionJobId, "data-status": job.status },
      el("td", { class: "mono", text: job.ingestionJobId }),
      el("td", {}, badge(job.status)),
      el("td", { text: fmtTime(job.startedAt) }),
      el("td", { title: fmtTime(job.updatedAt), text: fmtDuration(job.startedAt, job.updatedAt) }),
      ...STAT_KEYS.map((k) => el("td", { "data-stat": k, text: stats[k] ?? "" })),
    );
  });
  $("job-rows").replaceChildren(...rows);
  $("jobs-empty").hidden = state.jobs.length > 0;
  const latest = state.jobs[0];
  $("job-failures").replaceChildren(
    ...((latest && latest.failureReasons) || []).map((r) => el("li", { text: r })),
  );
}

async function loadJobs() {
  const out = await state.client.call("ListIngestionJobs", {
    knowledgeBaseId: state.kbId,
    dataSourceId: state.dsId,
    sortBy: { attribute: "STARTED_AT", order: "DESCENDING" },
    maxResults: 20,
  });
  state.jobs = out.ingestionJobSummaries || [];
  renderJobs();
}

function upsertJob(job) {
  const i = state.jobs.findIndex((j) => j.ingestionJobId === job.ingestionJobId);
  if (i >= 0) state.jobs[i] = job;
  else state.jobs.unshift(job);
  renderJobs();
}

async function sync() {
  const button = $("sync");
  const kbId = state.kbId;
  const dsId = state.dsId;
  const token = ++state.pollToken;
  button.disabled = true;
  button.textContent = "Syncing…";
  await guarded(async () => {
    let { ingestionJob: job } = await state.client.call("StartIngestionJob", {
      knowledgeBaseId: kbId,
      dataSourceId: dsId,
      clientToken: crypto.randomUUID(),
    });
    upsertJob(job);
    while (!TERMINAL.has(job.status) && token === state.pollToken) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      if (token !== state.pollToken) break; // the user moved on to another source
      ({ ingestionJob: job } = await state.client.call("GetIngestionJob", {
        knowledgeBaseId: kbId,
        dataSourceId: dsId,
        ingestionJobId: job.ingestionJobId,
      }));
      if (token !== state.pollToken) break;
      upsertJob(job);
    }
  });
  button.disabled = false;
  button.textContent = "Sync";
}

// -- Retrieve ---------------------------------------------------------------------------------
function sourceOf(location) {
  if (!location) return "";
  for (const [key, field] of [
    ["s3Location", "uri"],
    ["webLocation", "url"],
    ["customDocumentLocation", "id"],
    ["confluenceLocation", "url"],
    ["salesforceLocation", "url"],
    ["sharePointLocation", "url"],
    ["kendraDocumentLocation", "uri"],
  ]) {
    if (location[key] && location[key][field]) return location[key][field];
  }
  const rest = Object.fromEntries(Object.entries(location).filter(([k]) => k !== "type"));
  return JSON.stringify(rest);
}

function metaValue(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function renderResult(r) {
  const metadata = r.metadata || {};
  const keys = Object.keys(metadata).sort((a, b) => {
    const sa = a.startsWith("x-amz-") || a.startsWith("x-pgkb-");
    const sb = b.startsWith("x-amz-") || b.startsWith("x-pgkb-");
    return sa === sb ? a.localeCompare(b) : sa ? 1 : -1; // the document's own attributes first
  });
  const page = metadata["x-amz-bedrock-kb-document-page-number"];
  const content = r.content || {};
  const text = content.text ?? (content.row ? JSON.stringify(content.row) : "");
  return el(
    "li",
    { class: "result" },
    el(
      "div",
      { class: "result-head" },
      el("span", { class: "score", title: "score", text: typeof r.score === "number" ? r.score.toFixed(4) : "" }),
      el("span", { class: "source mono", text: sourceOf(r.location) }),
      page !== undefined ? el("span", { class: "muted", text: `page ${page}` }) : null,
    ),
    el("p", { class: "chunk", text }),
    keys.length
      ? el(
          "details",
          { class: "meta", open: true },
          el("summary", { text: `Metadata (${keys.length})` }),
          el(
            "table",
            {},
            el(
              "tbody",
              {},
              ...keys.map((k) =>
                el("tr", {}, el("th", { scope: "row", class: "mono", text: k }), el("td", { class: "mono", text: metaValue(metadata[k]) })),
              ),
            ),
          ),
        )
      : null,
  );
}

// The form's retrievalConfiguration, or null (with the error shown) when the filter is not JSON.
function retrievalConfiguration() {
  const vector = { numberOfResults: Number.parseInt($("n").value, 10) || 5 };
  if ($("search-type").value) vector.overrideSearchType = $("search-type").value;
  const rawFilter = $("filter").value.trim();
  if (rawFilter) {
    try {
      vector.filter = JSON.parse(rawFilter);
    } catch (err) {
      showError(new ApiError("InvalidFilter", `The filter is not valid JSON: ${err.message}`, 0, ""));
      return null;
    }
  }
  // MANAGED knowledge bases take managedSearchConfiguration (pgkb picks the strategy).
  if (state.kbType === "MANAGED") {
    const { overrideSearchType, ...managed } = vector;
    return { managedSearchConfiguration: managed };
  }
  return { vectorSearchConfiguration: vector };
}

// The user whose document ACLs apply (MANAGED knowledge bases), when one is named.
function userContext() {
  const user = $("user").value;
  return user ? { userContext: { userId: user } } : {};
}

async function retrieve(ev) {
  ev.preventDefault();
  const button = $("retrieve");
  const kbId = state.kbId;
  const config = retrievalConfiguration();
  if (!config) return;
  button.disabled = true;
  $("query-state").textContent = "Searching…";
  const started = performance.now();
  await guarded(async () => {
    const out = await state.client.call("Retrieve", {
      knowledgeBaseId: kbId,
      retrievalQuery: { text: $("q").value },
      retrievalConfiguration: config,
      ...userContext(),
    });
    if (kbId !== state.kbId) return;
    const results = out.retrievalResults || [];
    $("results").replaceChildren(...results.map(renderResult));
    const ms = Math.round(performance.now() - started);
    $("query-state").textContent = `${results.length} result${results.length === 1 ? "" : "s"} in ${ms} ms`;
  });
  if ($("query-state").textContent === "Searching…") $("query-state").textContent = "";
  button.disabled = false;
}

// -- RetrieveAndGenerate ----------------------------------------------------------------------
// The answer's text with each cited span marked and followed by the numbers of its references;
// references are numbered once each, in order of first citation.
function renderAnswer(out) {
  const text = (out.output && out.output.text) || "";
  const refs = [];
  const numbers = new Map();
  const spans = [];
  for (const c of out.citations || []) {
    const part = c.generatedResponsePart && c.generatedResponsePart.textResponsePart;
    const nums = [];
    for (const r of c.retrievedReferences || []) {
      const key = JSON.stringify([r.location, r.content && r.content.text]);
      if (!numbers.has(key)) {
        numbers.set(key, refs.length + 1);
        refs.push(r);
      }
      if (!nums.includes(numbers.get(key))) nums.push(numbers.get(key));
    }
    if (part && part.span && nums.length) spans.push({ start: part.span.start, end: part.span.end, nums });
  }
  spans.sort((a, b) => a.start - b.start);
  const p = $("answer-text");
  p.replaceChildren();
  let pos = 0;
  for (const s of spans) {
    if (s.start < pos || s.end > text.length) continue;
    if (s.start > pos) p.append(text.slice(pos, s.start));
    p.append(
      el("span", { class: "cited", text: text.slice(s.start, s.end) }),
      el("sup", { class: "cite", text: `[${s.nums.join(",")}]` }),
    );
    pos = s.end;
  }
  if (pos < text.length) p.append(text.slice(pos));
  $("references").replaceChildren(...refs.map(renderResult));
}

// An AgenticRetrieveStream result in the shape renderAnswer reads (RetrieveAndGenerate's): its
// citations point at result indexes; each result becomes a reference.
function agenticAsAnswer(result) {
  const items = result.results || [];
  const reference = (item) => ({
    content: { text: (item.content && item.content.text) || "" },
    metadata: item.metadata || {},
    location: { type: "CUSTOM", customDocumentLocation: { id: (item.metadata || {})["x-amz-bedrock-kb-source-uri"] || "" } },
  });
  const generated = result.generatedResponse || {};
  return {
    output: { text: generated.answer || "" },
    citations: (generated.citations || []).map((c) => ({
      generatedResponsePart: { textResponsePart: { span: { start: c.startIndex, end: c.endIndex } } },
      retrievedReferences: (c.references || []).filter((r) => items[r.resultIndex]).map((r) => reference(items[r.resultIndex])),
    })),
  };
}

async function askAgentic(kbId, started) {
  const params = {
    messages: [{ role: "user", content: { text: $("q").value } }],
    retrievers: [{ configuration: { knowledgeBase: { knowledgeBaseId: kbId } } }],
    agenticRetrieveConfiguration: {},
  };
  const model = $("model").value.trim();
  if (model && model !== "pgkb.extractive") {
    params.agenticRetrieveConfiguration = {
      foundationModelType: "CUSTOM",
      foundationModelConfiguration: {
        type: "BEDROCK_FOUNDATION_MODEL",
        bedrockFoundationModelConfiguration: { modelConfiguration: { modelArn: model } },
      },
    };
  }
  Object.assign(params, userContext());
  const events = await state.client.callStream("AgenticRetrieveStream", params);
  if (kbId !== state.kbId) return;
  const result = events.find((e) => e.type === "result");
  renderAnswer(agenticAsAnswer(result ? result.body : {}));
  const steps = events.filter((e) => e.type === "traceEvent" && e.body.attributes && e.body.attributes.status === "SUCCEEDED")
    .map((e) => e.body.attributes.step);
  const ms = Math.round(performance.now() - started);
  $("answer-state").textContent = `in ${ms} ms, ${steps.length} steps: ${steps.join(", ")}`;
  $("answer").dataset.steps = steps.join(",");
}

async function ask() {
  const button = $("ask");
  const kbId = state.kbId;
  const config = retrievalConfiguration();
  if (!config || !$("q").value.trim()) return;
  button.disabled = true;
  $("answer-state").textContent = "Answering…";
  $("answer").hidden = false;
  $("results").replaceChildren(); // the answer lists its own references
  $("query-state").textContent = "";
  const started = performance.now();
  if ($("agentic").checked) {
    await guarded(() => askAgentic(kbId, started));
    if ($("answer-state").textContent === "Answering…") $("answer-state").textContent = "";
    button.disabled = false;
    return;
  }
  await guarded(async () => {
    const params = {
      input: { text: $("q").value },
      retrieveAndGenerateConfiguration: {
        type: "KNOWLEDGE_BASE",
        knowledgeBaseConfiguration: {
          knowledgeBaseId: kbId,
          modelArn: $("model").value.trim() || "pgkb.extractive",
          retrievalConfiguration: config,
        },
      },
    };
    Object.assign(params, userContext());
    if (state.sessionId) params.sessionId = state.sessionId; // a follow-up: the server keeps the history
    const out = await state.client.call("RetrieveAndGenerate", params);
    if (kbId !== state.kbId) return;
    state.sessionId = out.sessionId || null;
    $("answer").dataset.session = state.sessionId || "";
    renderAnswer(out);
    const ms = Math.round(performance.now() - started);
    $("answer-state").textContent = `in ${ms} ms; follow-up questions continue this conversation`;
  });
  if ($("answer-state").textContent === "Answering…") $("answer-state").textContent = "";
  button.disabled = false;
}

function newConversation() {
  state.sessionId = null;
  $("answer").hidden = true;
  $("answer").dataset.session = "";
  $("answer-text").replaceChildren();
  $("references").replaceChildren();
}

// -- start ------------------------------------------------------------------------------------
function start() {
  initCredentials();
  $("refresh").addEventListener("click", async () => {
    await loadKbs();
    if (state.kbId) await selectKb(state.kbId, state.dsId);
  });
  $("sync").addEventListener("click", () => sync());
  $("query-form").addEventListener("submit", retrieve);
  $("ask").addEventListener("click", () => ask());
  $("new-conversation").addEventListener("click", newConversation);
  document.body.dataset.ready = "true";
  loadKbs();
}

start();
