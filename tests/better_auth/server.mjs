// A real Better Auth server for the tests (tests/test_mcp_oauth.py), configured as a front end
// must be for MCP clients (docs/mcp-oauth.md): the JWT plugin (session JWTs and the key set at
// /api/auth/jwks) and the OAuth provider plugin (OAuth 2.1 with PKCE, resource indicators, dynamic
// registration of public clients), with the RFC 8414 discovery document at the root.
//
// Environment: PORT (0: any free one), MCP_RESOURCE (the API's <origin>/mcp). Prints one JSON line
// {"url": ...} once listening; the database is in memory.
import http from "node:http";

import { oauthProvider, oauthProviderAuthServerMetadata } from "@better-auth/oauth-provider";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { getAuthTables } from "better-auth/db";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins";

const resource = process.env.MCP_RESOURCE;
if (!resource) throw new Error("MCP_RESOURCE is required");

const server = http.createServer();
await new Promise((resolve) => server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", resolve));
const baseURL = `http://127.0.0.1:${server.address().port}`;

const options = {
  baseURL,
  secret: "a-test-only-better-auth-secret-of-enough-length",
  emailAndPassword: { enabled: true },
  trustedOrigins: [baseURL],
  plugins: [
    jwt(),
    oauthProvider({
      // The front end's pages the authorize endpoint redirects to.
      loginPage: "/sign-in",
      consentPage: "/consent",
      scopes: ["openid", "profile", "email", "offline_access", "tasks:read", "tasks:write"],
      // The MCP resource: access tokens for it are JWTs with aud = resource.
      resources: [resource],
      // MCP clients register themselves (public "native" clients, loopback redirects).
      allowDynamicClientRegistration: true,
      allowUnauthenticatedClientRegistration: true,
      clientRegistrationDefaultResources: [resource],
      clientRegistrationDefaultScopes: ["tasks:read", "tasks:write"],
      clientRegistrationAllowedScopes: ["openid", "profile", "email", "offline_access", "tasks:read", "tasks:write"],
      silenceWarnings: { oauthAuthServerConfig: true, openidConfig: true },
    }),
  ],
};
// In memory: one empty table for every model Better Auth and its plugins use.
const tables = Object.fromEntries(
  Object.values(getAuthTables(options)).map((table) => [table.modelName, []]),
);
const auth = betterAuth({ ...options, database: memoryAdapter(tables) });

const handleAuth = toNodeHandler(auth);
const metadata = oauthProviderAuthServerMetadata(auth);

server.on("request", async (req, res) => {
  const url = new URL(req.url, baseURL);
  // RFC 8414 section 3.1: the issuer <origin>/api/auth has its metadata here.
  if (url.pathname === "/.well-known/oauth-authorization-server/api/auth") {
    const answer = await metadata(new Request(url, { headers: req.headers }));
    res.writeHead(answer.status, Object.fromEntries(answer.headers));
    res.end(await answer.text());
    return;
  }
  if (url.pathname.startsWith("/api/auth/")) {
    handleAuth(req, res);
    return;
  }
  // The login and consent pages a real front end renders: here the test drives the API itself.
  res.writeHead(200, { "content-type": "text/plain" });
  res.end(`page ${url.pathname}`);
});

process.stdout.write(`${JSON.stringify({ url: baseURL })}\n`);
