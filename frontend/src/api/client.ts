// The one way the app talks to the portal. Types come from the OpenAPI document
// (`npm run gen:api` → schema.d.ts); nothing here restates a response shape by hand.
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Me = Schemas["MeView"];
export type RequestView = Schemas["RequestView"];
export type RequestDetail = Schemas["RequestDetail"];
export type RequestPage = Schemas["RequestPage"];
export type Execution = Schemas["ExecutionView"];
export type RowsPage = Schemas["RowsPage"];
export type TokenResponse = Schemas["TokenResponse"];

/** Paths of the API, for `api()` calls to be checked against the document. */
export type ApiPath = keyof paths;

/** An error as the portal reports it: `{error: {code, message, details}}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> | null = null,
  ) {
    super(message);
  }

  /** Seconds the server asked us to wait (429, lockout), if it said. */
  get retryAfter(): number | null {
    const v = this.details?.["retry_after_seconds"];
    return typeof v === "number" ? v : null;
  }
}

interface Session {
  token: string | null;
  /** Called when the token expired: returns a fresh one, or null when signed out. */
  refresh: () => Promise<string | null>;
}

// The access token lives in memory only (never in storage), handed in by the auth provider.
const session: Session = { token: null, refresh: async () => null };

export function setSession(token: string | null, refresh?: () => Promise<string | null>) {
  session.token = token;
  if (refresh) session.refresh = refresh;
}

async function toError(r: Response): Promise<ApiError> {
  try {
    const body = (await r.json()) as { error?: { code?: string; message?: string; details?: Record<string, unknown> } };
    const e = body.error ?? {};
    return new ApiError(r.status, e.code ?? "unknown", e.message ?? r.statusText, e.details ?? null);
  } catch {
    return new ApiError(r.status, "unreadable", `the server answered ${r.status} ${r.statusText}`);
  }
}

const NO_RETRY = new Set(["/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/logout"]);

/** Calls the API with the current token; on a 401 refreshes once and tries again (not for
 * the sign-in and refresh calls themselves, whose 401 means what it says). */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const retry = !NO_RETRY.has(path);
  const send = (token: string | null) =>
    fetch(path, {
      method,
      credentials: "same-origin",
      headers: {
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  let r = await send(session.token);
  if (r.status === 401 && retry) {
    const fresh = await session.refresh();
    if (fresh) r = await send(fresh);
  }
  if (!r.ok) throw await toError(r);
  if (r.status === 204) return undefined as T;
  return (await r.json()) as T;
}

/** A file download through the API (CSV, JSON), saved under `name`. */
export async function download(path: string, name: string): Promise<void> {
  let r = await fetch(path, { headers: session.token ? { authorization: `Bearer ${session.token}` } : {} });
  if (r.status === 401) {
    const fresh = await session.refresh();
    if (fresh) r = await fetch(path, { headers: { authorization: `Bearer ${fresh}` } });
  }
  if (!r.ok) throw await toError(r);
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  URL.revokeObjectURL(url);
}
