#!/usr/bin/env node
// A minimal stdio MCP server (newline-delimited JSON-RPC): one tool, `shout`, that upper-cases its text.
const readline = require("readline");
const rl = readline.createInterface({ input: process.stdin });
const send = (msg) => process.stdout.write(JSON.stringify(msg) + "\n");
const TOOLS = [{
  name: "shout",
  description: "Return the text in capitals.",
  inputSchema: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
}];
rl.on("line", (line) => {
  let msg;
  try { msg = JSON.parse(line); } catch (e) { return; }
  if (msg.id === undefined) return; // notifications
  const reply = (result) => send({ jsonrpc: "2.0", id: msg.id, result });
  if (msg.method === "initialize") {
    reply({
      protocolVersion: (msg.params && msg.params.protocolVersion) || "2025-06-18",
      capabilities: { tools: {} },
      serverInfo: { name: "npm-echo", version: "1.0.0" },
    });
  } else if (msg.method === "tools/list") {
    reply({ tools: TOOLS });
  } else if (msg.method === "tools/call") {
    const text = String((msg.params.arguments || {}).text || "");
    reply({ content: [{ type: "text", text: text.toUpperCase() }], isError: false });
  } else if (msg.method === "ping") {
    reply({});
  } else {
    send({ jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: "method not found" } });
  }
});
