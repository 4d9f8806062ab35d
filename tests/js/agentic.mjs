// AgenticRetrieveStream's event stream read by the AWS SDK for JavaScript v3's own reader (the
// EventStreamMarshaller of @smithy/core, which the SDK's clients use to deserialize event streams:
// it checks every prelude and message CRC and turns exception frames into thrown errors).
// The pinned client-bedrock-agent-runtime predates AgenticRetrieveStreamCommand, so the request is
// made with fetch. Input (environment): PGKB_URL, PGKB_BODY (the request JSON). Output: one JSON
// object on stdout: {status, contentType, events: [{member: payload}], error: {name, message} | null}.
import { EventStreamMarshaller } from "@smithy/core/event-streams";

// smithy's naming: an Encoder turns bytes into a string, a Decoder a string into bytes
const utf8Encoder = (bytes) => new TextDecoder().decode(bytes);
const utf8Decoder = (text) => new TextEncoder().encode(text);
const res = await fetch(`${process.env.PGKB_URL}/agenticRetrieveStream`, {
  method: "POST", headers: { "content-type": "application/json" }, body: process.env.PGKB_BODY,
});
const out = { status: res.status, contentType: res.headers.get("content-type"), events: [], error: null };
if (res.status !== 200) {
  out.error = { name: res.headers.get("x-amzn-errortype"), message: await res.text() };
} else {
  const marshaller = new EventStreamMarshaller({ utf8Encoder, utf8Decoder });
  const stream = marshaller.deserialize(res.body, async (event) => {
    const [member] = Object.keys(event);
    const payload = JSON.parse(utf8Encoder(event[member].body));
    if (event[member].headers[":message-type"].value === "exception") {
      const err = new Error(payload.message);
      err.name = member;
      return { [member]: err };
    }
    return { [member]: payload };
  });
  try {
    for await (const ev of stream) out.events.push(ev);
  } catch (err) {
    out.error = { name: err.name, message: err.message };
  }
}
console.log(JSON.stringify(out));
