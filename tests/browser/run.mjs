// Serves a page (page.js bundled) on http://127.0.0.1:$PAGE_PORT, opens it in headless Chromium
// ($CHROMIUM, Debian's package; playwright-core drives it, no browser download), and has it use the
// MCP server at $MCP_URL with $TOKEN. Prints one JSON line: what the page saw.
import http from "node:http";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";
import { chromium } from "playwright-core";

const { MCP_URL, TOKEN, PAGE_PORT, CHROMIUM = "/usr/bin/chromium" } = process.env;

const bundled = await build({
  entryPoints: [fileURLToPath(new URL("page.js", import.meta.url))],
  bundle: true,
  format: "esm",
  platform: "browser",
  write: false,
  logLevel: "silent",
});
const script = bundled.outputFiles[0].text;
const page = http.createServer((req, res) => {
  if (req.url === "/page.js") {
    res.writeHead(200, { "content-type": "text/javascript" });
    res.end(script);
    return;
  }
  res.writeHead(200, { "content-type": "text/html" });
  res.end('<!doctype html><title>MCP</title><script type="module" src="/page.js"></script>');
});
await new Promise((resolve) => page.listen(Number(PAGE_PORT), "127.0.0.1", resolve));

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
try {
  const tab = await browser.newPage();
  const errors = [];
  tab.on("console", (message) => message.type() === "error" && errors.push(message.text()));
  await tab.goto(`http://127.0.0.1:${PAGE_PORT}/`);
  await tab.waitForFunction(() => typeof window.useTools === "function");
  const challenge = await tab.evaluate((url) => window.challenge(url), MCP_URL);
  let used = null;
  let failure = null;
  try {
    used = await tab.evaluate(([url, token]) => window.useTools(url, token), [MCP_URL, TOKEN]);
  } catch (error) {
    failure = String(error);
  }
  process.stdout.write(`${JSON.stringify({ challenge, used, failure, errors })}\n`);
} finally {
  await browser.close();
  page.close();
}
