import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError, api, setSession } from "./client";

function reply(status: number, body: unknown) {
  return new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

afterEach(() => {
  vi.unstubAllGlobals();
  setSession(null, async () => null);
});

describe("api", () => {
  it("refreshes once on a 401 and retries with the new token", async () => {
    const seen: (string | null)[] = [];
    vi.stubGlobal("fetch", vi.fn(async (_path: string, init: RequestInit) => {
      const auth = new Headers(init.headers).get("authorization");
      seen.push(auth);
      return auth === "Bearer fresh" ? reply(200, { ok: 1 }) : reply(401, { error: { code: "unauthenticated", message: "sign in" } });
    }));
    setSession("stale", async () => {
      setSession("fresh");
      return "fresh";
    });
    await expect(api("GET", "/api/v1/me")).resolves.toEqual({ ok: 1 });
    expect(seen).toEqual(["Bearer stale", "Bearer fresh"]);
  });

  it("never retries the refresh call itself, and reports the server's error", async () => {
    const refresh = vi.fn(async () => "x");
    vi.stubGlobal("fetch", vi.fn(async () => reply(401, { error: { code: "session_ended", message: "the session ended", details: { retry_after_seconds: 3 } } })));
    setSession("stale", refresh);
    const e = await api("POST", "/api/v1/auth/refresh").catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ApiError);
    expect((e as ApiError).code).toBe("session_ended");
    expect((e as ApiError).retryAfter).toBe(3);
    expect(refresh).not.toHaveBeenCalled();
  });
});
