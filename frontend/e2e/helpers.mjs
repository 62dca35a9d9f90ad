// Shared set-up for the browser tests: one Chromium, a fresh context per person, sign-in, and
// direct API calls for the steps a test is not about.
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

export const BASE = process.env.QUORUM_URL ?? "http://127.0.0.1:8080";
// A second demo portal whose `quorum-sandbox` is missing (`cargo xtask test` starts it).
export const NO_SANDBOX_BASE = process.env.QUORUM_NO_SANDBOX_URL;
export const ARTIFACTS = process.env.ARTIFACTS ?? "../target/browser";
export const PASSWORD = "quorum-demo-password";
export const DAN = "dan@example.com";
export const MAYA = "maya@example.com";
export const GINA = "gina@example.com";
export const ADMIN = "admin@example.com";
// The demo SQLite database, inside the portal's data directory.
export const SHOP_FILE = "demo-shop.db";

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}

/** A signed-in page in its own context (its own cookies: one person, one device), on the
 * portal at `base`. */
export async function signedIn(browser, email, options = {}, base = BASE) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true, ...options });
  const page = await context.newPage();
  page.on("pageerror", (e) => {
    throw e;
  });
  await page.goto(base + "/");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "My requests" }).waitFor();
  return page;
}

const tokens = new Map();

/** An access token for API calls made beside the browser (one sign-in per person). */
export async function token(email) {
  if (tokens.has(email)) return tokens.get(email);
  const r = await fetch(BASE + "/api/v1/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password: PASSWORD }),
  });
  if (!r.ok) throw new Error(`login ${email}: ${r.status}`);
  const t = (await r.json()).access_token;
  tokens.set(email, t);
  return t;
}

export async function call(email, method, path, body) {
  const r = await fetch(BASE + path, {
    method,
    headers: { authorization: `Bearer ${await token(email)}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  return { status: r.status, body: text && r.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text };
}

/** Files a read query (or script) on demo-shop as Dan through the API; returns the request. */
export async function fileQuery(content, justification, kind = "query") {
  const pods = await call(DAN, "GET", "/api/v1/me");
  const instances = await call(DAN, "GET", "/api/v1/instances");
  const shop = instances.body.items.find((i) => i.name === "demo-shop");
  const r = await call(DAN, "POST", "/api/v1/requests", {
    pod_id: pods.body.home_pod.id,
    instance_id: shop.id,
    database: "main",
    kind,
    mode: "read",
    content,
    justification,
  });
  if (r.status !== 201) throw new Error(JSON.stringify(r.body));
  return r.body;
}

/** Runs axe-core in the page; returns the serious and critical violations. */
export async function axe(page) {
  const require = createRequire(import.meta.url);
  await page.addScriptTag({ path: require.resolve("axe-core/axe.min.js") });
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
}

export async function shot(page, name) {
  await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true });
}
