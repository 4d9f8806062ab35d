// The AWS SDK for JavaScript v3 and @langchain/aws against `pgkb serve`, with default settings: only
// the endpoint, region and credentials are given, so the runtime clients use their default
// NodeHttp2Handler (HTTP/2 with prior knowledge on http:// endpoints) and the agent client HTTP/1.1.
// Input (environment): PGKB_URL, PGKB_AKID, PGKB_SECRET, PGKB_RDS (the rdsConfiguration JSON),
// PGKB_MODEL_ARN, PGKB_MODEL_ID. Output: one JSON object on stdout that tests/test_js_clients.py checks.
import {
  BedrockAgentClient, CreateKnowledgeBaseCommand, CreateDataSourceCommand,
  IngestKnowledgeBaseDocumentsCommand, GetKnowledgeBaseDocumentsCommand, ListKnowledgeBasesCommand,
} from "@aws-sdk/client-bedrock-agent";
import {
  BedrockAgentRuntimeClient, RetrieveCommand, RetrieveAndGenerateCommand,
  RetrieveAndGenerateStreamCommand, paginateRetrieve,
} from "@aws-sdk/client-bedrock-agent-runtime";
import { BedrockRuntimeClient, InvokeModelCommand } from "@aws-sdk/client-bedrock-runtime";
import { AmazonKnowledgeBaseRetriever, BedrockEmbeddings } from "@langchain/aws";

const env = process.env;
const credentials = { accessKeyId: env.PGKB_AKID, secretAccessKey: env.PGKB_SECRET };
const base = { endpoint: env.PGKB_URL, region: "us-east-1", credentials };
const agent = new BedrockAgentClient(base);
const runtime = new BedrockAgentRuntimeClient(base);
const models = new BedrockRuntimeClient(base);
const out = { handlers: {} };

async function failure(promise) {
  try {
    await promise;
    return null;
  } catch (err) {
    return { name: err.name, status: err.$metadata?.httpStatusCode, message: err.message,
      attempts: err.$metadata?.attempts };
  }
}

const handlerOf = (client) => client.config.requestHandler?.constructor?.name;
out.handlers = { agent: handlerOf(agent), runtime: handlerOf(runtime), models: handlerOf(models) };

// -- bedrock-agent: a knowledge base, a CUSTOM data source, three documents -------------------
const kb = (await agent.send(new CreateKnowledgeBaseCommand({
  name: `js-${Date.now()}`,
  roleArn: "arn:aws:iam::000000000000:role/pgkb",
  knowledgeBaseConfiguration: { type: "VECTOR",
    vectorKnowledgeBaseConfiguration: { embeddingModelArn: env.PGKB_MODEL_ARN } },
  storageConfiguration: { type: "RDS", rdsConfiguration: JSON.parse(env.PGKB_RDS) },
}))).knowledgeBase;
const kbId = kb.knowledgeBaseId;
out.kbId = kbId;
const ds = (await agent.send(new CreateDataSourceCommand({
  knowledgeBaseId: kbId, name: "inline", dataSourceConfiguration: { type: "CUSTOM" },
}))).dataSource;
const doc = (id, text, team) => ({
  content: { dataSourceType: "CUSTOM", custom: { customDocumentIdentifier: { id }, sourceType: "IN_LINE",
    inlineContent: { type: "TEXT", textContent: { data: text } } } },
  metadata: { type: "IN_LINE_ATTRIBUTE",
    inlineAttributes: [{ key: "team", value: { type: "STRING", stringValue: team } }] },
});
await agent.send(new IngestKnowledgeBaseDocumentsCommand({
  knowledgeBaseId: kbId, dataSourceId: ds.dataSourceId, documents: [
    doc("penguins", "Penguins are flightless birds living in the southern hemisphere.", "birds"),
    doc("owls", "Owls hunt at night and can rotate their heads very far.", "birds"),
    doc("sharks", "Sharks have skeletons made of cartilage rather than bone.", "fish"),
    doc("eels", "Electric eels stun their prey with strong electric discharges.", "fish"),
  ],
}));
const ids = ["penguins", "owls", "sharks", "eels"].map((id) => ({ dataSourceType: "CUSTOM", custom: { id } }));
for (let i = 0; i < 300; i++) {
  const details = (await agent.send(new GetKnowledgeBaseDocumentsCommand({
    knowledgeBaseId: kbId, dataSourceId: ds.dataSourceId, documentIdentifiers: ids,
  }))).documentDetails;
  out.statuses = details.map((d) => d.status);
  if (out.statuses.every((s) => s === "INDEXED")) break;
  await new Promise((r) => setTimeout(r, 200));
}
out.listed = (await agent.send(new ListKnowledgeBasesCommand({}))).knowledgeBaseSummaries
  .some((k) => k.knowledgeBaseId === kbId);

// -- bedrock-agent-runtime over HTTP/2 ---------------------------------------------------------
const filtered = await runtime.send(new RetrieveCommand({
  knowledgeBaseId: kbId, retrievalQuery: { text: "birds that cannot fly" },
  retrievalConfiguration: { vectorSearchConfiguration: { numberOfResults: 5,
    filter: { equals: { key: "team", value: "birds" } } } },
}));
out.filtered = filtered.retrievalResults.map((r) => r.location.customDocumentLocation.id);
out.filteredNextToken = filtered.nextToken ?? null;

const paged = [];
let pages = 0;
for await (const page of paginateRetrieve({ client: runtime }, {
  knowledgeBaseId: kbId, retrievalQuery: { text: "animals" },
  retrievalConfiguration: { vectorSearchConfiguration: { numberOfResults: 2 } },
})) {
  pages += 1;
  paged.push(...page.retrievalResults.map((r) => r.location.customDocumentLocation.id));
}
out.paged = { pages, ids: paged };

const conf = { type: "KNOWLEDGE_BASE",
  knowledgeBaseConfiguration: { knowledgeBaseId: kbId, modelArn: "pgkb.extractive" } };
const rag = await runtime.send(new RetrieveAndGenerateCommand({
  input: { text: "which birds cannot fly" }, retrieveAndGenerateConfiguration: conf,
}));
out.rag = { text: rag.output.text, sessionId: rag.sessionId,
  cited: rag.citations.flatMap((c) => c.retrievedReferences.map((r) => r.location.customDocumentLocation.id)) };

const streamed = await runtime.send(new RetrieveAndGenerateStreamCommand({
  input: { text: "which birds cannot fly" }, retrieveAndGenerateConfiguration: conf,
}));
const events = { output: "", citations: 0, other: [] };
for await (const ev of streamed.stream) {
  if (ev.output) events.output += ev.output.text;
  else if (ev.citation) events.citations += 1;
  else events.other.push(Object.keys(ev));
}
out.stream = { sessionId: streamed.sessionId, ...events };

// -- bedrock-runtime over HTTP/2 ---------------------------------------------------------------
const invoked = await models.send(new InvokeModelCommand({
  modelId: env.PGKB_MODEL_ID, contentType: "application/json", accept: "application/json",
  body: JSON.stringify({ inputText: "hello" }),
}));
out.invoke = { dims: JSON.parse(new TextDecoder().decode(invoked.body)).embedding.length };

// -- errors, as AWS answers them -----------------------------------------------------------
out.errors = {
  missingKb: await failure(runtime.send(new RetrieveCommand({
    knowledgeBaseId: "ZZZZZZZZZZ", retrievalQuery: { text: "q" } }))),
  badNumber: await failure(runtime.send(new RetrieveCommand({ knowledgeBaseId: kbId,
    retrievalQuery: { text: "q" },
    retrievalConfiguration: { vectorSearchConfiguration: { numberOfResults: 1000 } } }))),
  wrongSecret: await failure(new BedrockAgentRuntimeClient({ ...base, maxAttempts: 1,
    credentials: { ...credentials, secretAccessKey: "x".repeat(40) } })
    .send(new RetrieveCommand({ knowledgeBaseId: kbId, retrievalQuery: { text: "q" } }))),
  unknownKey: await failure(new BedrockAgentRuntimeClient({ ...base, maxAttempts: 1,
    credentials: { accessKeyId: "PGKBUNKNOWN000000000", secretAccessKey: "x".repeat(40) } })
    .send(new RetrieveCommand({ knowledgeBaseId: kbId, retrievalQuery: { text: "q" } }))),
  // a clock 20 minutes behind, without retries: the signature has expired
  skewNoRetry: await failure(new BedrockAgentRuntimeClient({ ...base, maxAttempts: 1,
    systemClockOffset: -20 * 60 * 1000 })
    .send(new RetrieveCommand({ knowledgeBaseId: kbId, retrievalQuery: { text: "q" } }))),
  agentSkewNoRetry: await failure(new BedrockAgentClient({ ...base, maxAttempts: 1,
    systemClockOffset: 20 * 60 * 1000 }).send(new ListKnowledgeBasesCommand({}))),
};
// with the default retries the SDK corrects its clock from the answer's Date header and succeeds
const skewed = new BedrockAgentRuntimeClient({ ...base, systemClockOffset: -20 * 60 * 1000 });
const skewedAnswer = await skewed.send(new RetrieveCommand({ knowledgeBaseId: kbId,
  retrievalQuery: { text: "sharks" } }));
out.skewRetried = { results: skewedAnswer.retrievalResults.length, attempts: skewedAnswer.$metadata.attempts };

// -- @langchain/aws ----------------------------------------------------------------------------
const retriever = new AmazonKnowledgeBaseRetriever({
  knowledgeBaseId: kbId, topK: 2, region: "us-east-1",
  clientOptions: { endpoint: env.PGKB_URL, credentials },
  filter: { equals: { key: "team", value: "fish" } },
});
const docs = await retriever.invoke("which animal uses electricity");
out.langchain = docs.map((d) => ({ text: d.pageContent, team: d.metadata.team ?? null }));
const embeddings = new BedrockEmbeddings({ model: env.PGKB_MODEL_ID, region: "us-east-1", credentials,
  clientOptions: { endpoint: env.PGKB_URL } });
out.langchainEmbedding = (await embeddings.embedQuery("hello")).length;

process.stdout.write(JSON.stringify(out));
