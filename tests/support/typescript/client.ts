// A typed client for the whole API, from the types openapi-typescript generates (./schema.d.ts).
// tests/test_openapi.py generates the types from openapi.json and type-checks this file with tsc.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

type Task = components["schemas"]["TaskPublic"];

export async function example(token: string): Promise<Task[]> {
  const api = createClient<paths>({
    baseUrl: "http://127.0.0.1:8000",
    headers: { Authorization: `Bearer ${token}` },
  });
  const created = await api.POST("/api/tasks", {
    body: { title: "Buy milk", priority: "high", tags: ["home"], due_date: "2026-11-30" },
    params: { header: { "idempotency-key": "first" } },
  });
  if (created.data) {
    const id: number = created.data.id;
    await api.PATCH("/api/tasks/{task_id}/complete", { params: { path: { task_id: id } } });
  }
  const listed = await api.GET("/api/tasks", {
    params: { query: { status: "pending", sort: "due_date", order: "asc", limit: 10 } },
  });
  const health = await api.GET("/api/health");
  if (health.data) {
    const status: string = health.data.status;
    void status;
  }
  return listed.data ? listed.data.items : [];
}
