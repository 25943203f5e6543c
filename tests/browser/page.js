// The page's script: the official MCP TypeScript client, as a browser MCP client runs it, from a
// page on another origin than the API (bundled by run.mjs with esbuild).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const LIST_TOOLS = { jsonrpc: "2.0", id: 1, method: "tools/list" };

// What a client sees before it has a token: the 401 and its challenge (readable only when CORS
// exposes WWW-Authenticate).
window.challenge = async (mcpUrl) => {
  const response = await fetch(mcpUrl, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
    body: JSON.stringify(LIST_TOOLS),
  });
  return { status: response.status, challenge: response.headers.get("www-authenticate") };
};

window.useTools = async (mcpUrl, token) => {
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name: "browser-page", version: "1.0.0" });
  await client.connect(transport);
  try {
    const tools = await client.listTools();
    const added = await client.callTool({ name: "add_task", arguments: { title: "From a browser" } });
    const listed = await client.callTool({ name: "list_tasks", arguments: {} });
    return {
      protocol: transport.protocolVersion ?? null,
      tools: tools.tools.map((tool) => tool.name),
      added: added.structuredContent,
      listed: listed.structuredContent,
    };
  } finally {
    await client.close();
  }
};
