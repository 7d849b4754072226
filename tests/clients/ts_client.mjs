// Drives Atelier with the official TypeScript MCP SDK (any 1.x) and prints one JSON report.
// Usage: node ts_client.mjs stdio <python> <args...>   |   node ts_client.mjs http <url>
// Each step records {ok, ...} or {ok: false, error}: a client-side validation failure
// (e.g. an unknown content type) shows up as ok=false with the SDK's message.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { readFileSync } from "node:fs";

const [mode, ...rest] = process.argv.slice(2);
const sdkVersion = JSON.parse(
  readFileSync(new URL("./node_modules/@modelcontextprotocol/sdk/package.json", import.meta.url)),
).version;
const transport = mode === "stdio"
  ? new StdioClientTransport({ command: rest[0], args: rest.slice(1), env: process.env, stderr: "inherit" })
  : new StreamableHTTPClientTransport(new URL(rest[0]));
const client = new Client({ name: "atelier-ts-test", version: "1.0.0" }, { capabilities: {} });
const report = { sdk: sdkVersion, steps: {} };

async function step(name, fn) {
  try {
    report.steps[name] = { ok: true, ...(await fn()) };
  } catch (error) {
    report.steps[name] = { ok: false, error: String(error && error.message ? error.message : error).slice(0, 2000) };
  }
  return report.steps[name];
}

const types = (result) => result.content.map((block) => block.type);
const errorCode = (result) => result.structuredContent?.error?.code ?? null;

await client.connect(transport);
report.protocolVersion = transport.protocolVersion ?? client._protocolVersion ?? null;
await step("tools", async () => {
  const { tools } = await client.listTools();
  return { names: tools.map((t) => t.name), bytes: JSON.stringify(tools).length };
});
let uri = null;
await step("generate", async () => {
  const progress = [];
  const result = await client.callTool(
    { name: "generate_image", arguments: { prompt: "a lighthouse", model: "placeholder", size: "256x256" } },
    undefined,
    { onprogress: (p) => progress.push(p.progress) },
  );
  uri = result.structuredContent?.images?.[0]?.resource_uri
    ?? /atelier:\/\/images\/\S+\.png/.exec(result.content[0].text)?.[0];
  const text = result.content.filter((b) => b.type === "text").map((b) => b.text).join("\n");
  return { isError: !!result.isError, types: types(result), uri, progress, text };
});
await step("read", async () => {
  const read = await client.readResource({ uri });
  return { mimeType: read.contents[0].mimeType, blobChars: (read.contents[0].blob || "").length };
});
await step("edit", async () => {
  const result = await client.callTool({
    name: "edit_image", arguments: { prompt: "add a boat", model: "placeholder", images: [uri] },
  });
  return { isError: !!result.isError, types: types(result) };
});
await step("session", async () => {
  const result = await client.callTool({
    name: "edit_session", arguments: { action: "start", image: uri },
  });
  return { isError: !!result.isError, types: types(result) };
});
await step("models", async () => {
  const result = await client.callTool({ name: "list_available_models", arguments: {} });
  return { isError: !!result.isError, bytes: JSON.stringify(result).length };
});
await step("refused", async () => {
  const result = await client.callTool({ name: "generate_image", arguments: { prompt: "x", model: "nope" } });
  return { isError: !!result.isError, code: errorCode(result), text: result.content[0].text };
});
await step("health", async () => {
  const result = await client.callTool({ name: "health", arguments: {} });
  return { isError: !!result.isError, status: result.structuredContent?.status ?? null };
});
await step("prompts", async () => {
  const { prompts } = await client.listPrompts();
  return { names: prompts.map((p) => p.name) };
});
await client.close();
process.stdout.write(JSON.stringify(report) + "\n");
