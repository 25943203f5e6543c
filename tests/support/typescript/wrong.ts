// Must NOT type-check: proves the generated types constrain a client (a number as a title).
import createClient from "openapi-fetch";
import type { paths } from "./schema";

const api = createClient<paths>({ baseUrl: "http://127.0.0.1:8000" });
void api.POST("/api/tasks", { body: { title: 42 } });
