// The core flow in a real Chromium against the real portal: file, check, approve, run, read,
// download; who may review; results rendered as text; accessibility of the main pages.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, test } from "node:test";
import { ADMIN, BASE, DAN, GINA, MAYA, NO_SANDBOX_BASE, SHOP_FILE, axe, call, fileQuery, launch, shot, signedIn } from "./helpers.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test("a developer files a query, a manager approves it, the developer reads and downloads the rows", async () => {
  const dan = await signedIn(browser, DAN);
  await dan.getByRole("link", { name: "New request" }).click();
  await dan.getByRole("heading", { name: "New request" }).waitFor();
  const editor = dan.locator(".cm-content");
  await editor.click();
  await dan.keyboard.type("SELEC id, email FROM customers ORDER BY id LIMIT 5");
  // The syntax check marks the line and says what is wrong.
  await dan.getByRole("status", { name: "Syntax errors" }).waitFor();
  await dan.locator(".cm-marked").first().waitFor();
  await shot(dan, "new-request-syntax-error");
  await editor.click();
  await dan.keyboard.press("Control+A");
  await dan.keyboard.type("SELECT id, email FROM customers ORDER BY id LIMIT 5");
  await dan.getByText(/Syntax OK/).waitFor();
  assert.equal(await dan.locator(".cm-marked").count(), 0);
  const why = `Browser flow ${Date.now()}: checking customer emails`;
  await dan.getByLabel(/Justification/).fill(why);
  await dan.getByRole("button", { name: "Submit for review" }).click();
  await dan.getByRole("heading", { name: why }).waitFor();
  await dan.getByText("Awaiting review").first().waitFor();
  // The author sees why they cannot review it.
  await dan.getByText(/You cannot review this request/).waitFor();
  assert.equal(await dan.getByRole("button", { name: "Submit review" }).count(), 0);
  const requestUrl = dan.url();
  await shot(dan, "request-detail-pending");

  const maya = await signedIn(browser, MAYA);
  const approvals = maya.getByRole("link", { name: /Approvals/ });
  await approvals.locator(".pill").waitFor();
  await approvals.click();
  await maya.getByRole("heading", { name: "Approvals inbox" }).waitFor();
  await shot(maya, "approvals-inbox");
  const listed = maya.getByRole("row").filter({ hasText: why });
  await listed.getByText(/by Dan Developer/).waitFor();
  await maya.getByRole("link", { name: why }).click();
  await maya.getByRole("button", { name: "Submit review" }).click();
  await maya.getByText("Succeeded").first().waitFor({ timeout: 20_000 });

  await dan.goto(requestUrl);
  await dan.getByText("Succeeded").first().waitFor({ timeout: 20_000 });
  await dan.getByText(/Maya Manager approved revision 1/).waitFor();
  const table = dan.getByRole("region", { name: "Result" }).locator("table");
  await table.waitFor();
  assert.equal(await table.locator("tbody tr").count(), 5);
  await shot(dan, "request-detail-succeeded");
  const [download] = await Promise.all([
    dan.waitForEvent("download"),
    dan.getByRole("button", { name: "Download CSV" }).click(),
  ]);
  const saved = await readFile(await download.path(), "utf8");
  const detail = await call(DAN, "GET", `/api/v1/requests/${requestUrl.split("/").pop()}`);
  const csv = await call(DAN, "GET", `/api/v1/executions/${detail.body.executions[0].id}/result.csv`);
  assert.equal(saved, csv.body);
  assert.match(saved, /^id,email\r\n1,/);
  await dan.context().close();
  await maya.context().close();
});

test("a manager of another POD cannot open the request", async () => {
  const r = await fileQuery("SELECT 1", `Another POD cannot see this ${Date.now()}`);
  const gina = await signedIn(browser, GINA);
  await gina.goto(`${BASE}/requests/${r.id}`);
  await gina.getByRole("alert").filter({ hasText: "request not found" }).waitFor();
  await gina.context().close();
});

test("result cells are text: an HTML payload does not run", async () => {
  const r = await fileQuery("SELECT '<img src=x onerror=window.__pwned=1>' AS payload", `Payload as text ${Date.now()}`);
  const review = await call(MAYA, "POST", `/api/v1/requests/${r.id}/reviews`, { decision: "approve", comment: "", revision_hash: r.revision_hash });
  assert.equal(review.status, 200, JSON.stringify(review.body));
  const dan = await signedIn(browser, DAN);
  await dan.goto(`${BASE}/requests/${r.id}`);
  const cell = dan.getByRole("cell", { name: "<img src=x onerror=window.__pwned=1>" });
  await cell.waitFor({ timeout: 20_000 });
  assert.equal(await dan.locator("img").count(), 0);
  assert.equal(await dan.evaluate(() => window.__pwned), undefined);
  await dan.context().close();
});

test("the main pages have no serious or critical accessibility violations, at 1280 px and on a phone", async () => {
  const r = await fileQuery("SELECT id FROM customers LIMIT 2", `Accessibility check ${Date.now()}`);
  for (const viewport of [{ width: 1280, height: 900 }, { width: 390, height: 844 }]) {
    const context = await browser.newContext({ viewport, bypassCSP: true });
    const page = await context.newPage();
    await page.goto(BASE + "/");
    await page.getByLabel("Email").waitFor();
    const found = { "sign-in": await axe(page) };
    await shot(page, `sign-in-${viewport.width}`);
    await page.getByLabel("Email").fill(MAYA);
    await page.getByLabel("Password").fill("quorum-demo-password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("link", { name: "Sign out" }).or(page.getByRole("button", { name: "Sign out" })).waitFor();
    for (const [name, path, heading] of [
      ["my-requests", "/requests", "My requests"],
      ["inbox", "/inbox", "Approvals inbox"],
      ["new-request", "/requests/new", "New request"],
      ["request-detail", `/requests/${r.id}`, r.justification],
    ]) {
      await page.goto(BASE + path);
      await page.getByRole("heading", { name: heading }).waitFor();
      found[name] = await axe(page);
      await shot(page, `${name}-${viewport.width}`);
    }
    for (const [name, violations] of Object.entries(found)) {
      assert.deepEqual(violations, [], `${name} at ${viewport.width} px`);
    }
    await context.close();
  }
});

test("an admin's session can be signed out and its token stops working", async () => {
  const admin = await signedIn(browser, ADMIN);
  await admin.getByRole("button", { name: "Sign out" }).click();
  await admin.getByRole("button", { name: "Sign in" }).waitFor();
  await admin.reload();
  await admin.getByRole("button", { name: "Sign in" }).waitFor();
  await admin.context().close();
});

test("an admin creates a user, who must choose a new password at first sign-in", async () => {
  const admin = await signedIn(browser, ADMIN);
  await admin.getByRole("link", { name: "Users" }).click();
  await admin.getByRole("heading", { name: "Users" }).waitFor();
  await admin.getByText("New user").click();
  const email = `newcomer${Date.now()}@example.com`;
  const form = admin.locator("details.panel form");
  await form.getByLabel("Email").fill(email);
  await form.getByLabel("Name").fill("Nina Newcomer");
  await form.getByLabel("Home POD").selectOption({ label: "payments" });
  await form.getByRole("button", { name: "Create user" }).click();
  const note = admin.getByRole("status").filter({ hasText: email });
  await note.waitFor();
  const initial = (await note.textContent()).match(/first sign-in\): (\S+)/)?.[1];
  assert.ok(initial, await note.textContent());
  await shot(admin, "admin-users");
  await admin.context().close();

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const nina = await context.newPage();
  await nina.goto(BASE + "/");
  await nina.getByLabel("Email").fill(email);
  await nina.getByLabel("Password").fill(initial);
  await nina.getByRole("button", { name: "Sign in" }).click();
  await nina.getByRole("heading", { name: "Choose your own password" }).waitFor();
  await nina.getByLabel("Current password").fill(initial);
  await nina.getByLabel("New password", { exact: true }).fill("a much longer passphrase 42");
  await nina.getByLabel("Repeat the new password").fill("a much longer passphrase 42");
  await nina.getByRole("button", { name: "Change password" }).click();
  await nina.getByRole("heading", { name: "My requests" }).waitFor();
  await context.close();
});

test("revoking another device ends it: its next API call is refused", async () => {
  const phone = await signedIn(browser, DAN, { userAgent: "Dan's phone" });
  const laptop = await signedIn(browser, DAN, { userAgent: "Dan's laptop" });
  await laptop.getByRole("link", { name: "Sessions" }).click();
  await laptop.getByRole("heading", { name: "My sessions" }).waitFor();
  await shot(laptop, "sessions");
  const row = laptop.getByRole("row").filter({ hasText: "Dan's phone" });
  await row.getByRole("button", { name: /Sign out/ }).click();
  await row.waitFor({ state: "detached" });
  // The phone's next call is refused, and so is the refresh it tries: it is back at sign-in,
  // without reloading the page.
  await phone.getByRole("link", { name: "Sessions" }).click();
  await phone.getByRole("button", { name: "Sign in" }).waitFor();
  await phone.context().close();
  await laptop.context().close();
});

test("admin pages: PODs with their managers, the audit log with an intact chain; accessible", async () => {
  // axe is injected as a script tag, which the portal's CSP would refuse.
  const admin = await signedIn(browser, ADMIN, { bypassCSP: true });
  const context = admin.context();
  await admin.getByRole("link", { name: "PODs" }).click();
  await admin.getByRole("heading", { name: "PODs" }).waitFor();
  await admin.getByRole("button", { name: "Edit payments" }).click();
  const editor = admin.getByRole("region", { name: "Edit payments" });
  await editor.getByRole("checkbox", { name: /Maya Manager/, checked: true }).waitFor();
  assert.equal(await editor.getByRole("checkbox", { name: /Gina Growth/ }).isChecked(), false);
  assert.deepEqual(await axe(admin), [], "PODs");
  await shot(admin, "admin-pods");

  await admin.getByRole("link", { name: "Audit" }).click();
  await admin.getByRole("heading", { name: "Audit log" }).waitFor();
  await admin.getByRole("button", { name: "Verify the chain" }).click();
  await admin.getByRole("status").filter({ hasText: /^Intact: all \d+ events/ }).waitFor();
  await admin.getByLabel("Action").fill("auth.login");
  await admin.getByRole("cell", { name: "auth.login", exact: true }).first().waitFor();
  assert.deepEqual(await axe(admin), [], "audit");
  await shot(admin, "admin-audit");

  await admin.getByRole("link", { name: "Users" }).click();
  await admin.getByRole("heading", { name: "Users" }).waitFor();
  await admin.getByRole("cell", { name: /maya@example.com/ }).waitFor();
  assert.deepEqual(await axe(admin), [], "users");
  await context.close();
});

test("an admin registers an instance, tests it, syncs its databases and sets its limits", async () => {
  // axe is injected as a script tag, which the portal's CSP would refuse.
  const admin = await signedIn(browser, ADMIN, { bypassCSP: true });
  const context = admin.context();
  await admin.getByRole("link", { name: "Instances" }).click();
  await admin.getByRole("heading", { name: "Instances" }).waitFor();
  await admin.getByRole("button", { name: "New instance" }).click();
  const form = admin.getByRole("region", { name: "New instance" });
  const name = `reporting-${Date.now()}`;
  await form.getByLabel("Name").fill(name);
  await form.getByLabel("Engine").selectOption("sqlite");
  await form.getByLabel("Environment").fill("staging");
  await form.getByLabel(/File/).fill(SHOP_FILE);
  await form.getByRole("checkbox", { name: "growth" }).check();
  await form.getByRole("button", { name: "Create instance" }).click();
  const row = admin.getByRole("row").filter({ hasText: name });
  await row.waitFor();
  await row.getByRole("button", { name: "Test connection" }).click();
  await row.getByRole("status").filter({ hasText: /^Reachable/ }).waitFor();
  await row.getByRole("button", { name: "Sync databases" }).click();
  await row.getByRole("status").filter({ hasText: "Databases: main" }).waitFor();
  assert.deepEqual(await axe(admin), [], "instances");
  await shot(admin, "admin-instances");

  await row.getByRole("button", { name: `Edit ${name}` }).click();
  const edit = admin.getByRole("region", { name: `Edit ${name}` });
  await edit.getByLabel("Time in all (ms)").fill("5000");
  await edit.getByLabel("Per statement or call (ms)").fill("2000");
  await edit.getByLabel("Approvals required").fill("2");
  await edit.getByRole("button", { name: "Save" }).click();
  await edit.waitFor({ state: "detached" });
  await admin.getByRole("row").filter({ hasText: name }).getByText("2 approvals").waitFor();
  const listed = await call(ADMIN, "GET", "/api/v1/instances?per_page=100");
  const created = listed.body.items.find((i) => i.name === name);
  assert.equal(created.limits.wall_ms, 5000);
  assert.equal(created.effective_limits.wall_ms, 5000);
  assert.equal(created.effective_limits.db_call_ms, 2000);
  // A wrong value comes back as the server's message, and nothing is saved.
  await admin.getByRole("row").filter({ hasText: name }).getByRole("button", { name: `Edit ${name}` }).click();
  const again = admin.getByRole("region", { name: `Edit ${name}` });
  await again.getByLabel("Time in all (ms)").fill("5");
  await again.getByRole("button", { name: "Save" }).click();
  await again.getByRole("alert").filter({ hasText: /wall_ms/ }).waitFor();
  await context.close();
});

test("a reviewer sees the plan; a clone opens the form prefilled and files a new request", async () => {
  const r = await fileQuery("SELECT id FROM customers WHERE id = 3", `Plan and clone ${Date.now()}`);
  const maya = await signedIn(browser, MAYA);
  await maya.goto(`${BASE}/requests/${r.id}`);
  await maya.getByRole("button", { name: "EXPLAIN" }).click();
  await maya.getByText(/Plan of statement 1/).waitFor();
  assert.match(await maya.locator("pre.plan").first().textContent(), /customers/i);
  await maya.context().close();

  const dan = await signedIn(browser, DAN);
  await dan.goto(`${BASE}/requests/${r.id}`);
  await dan.getByRole("button", { name: "Clone" }).click();
  await dan.getByRole("heading", { name: "New request" }).waitFor();
  await dan.getByText("A copy of an earlier request").waitFor();
  assert.equal(await dan.getByLabel(/Justification/).inputValue(), r.justification);
  await dan.locator(".cm-content").getByText("WHERE id = 3").waitFor();
  await dan.getByLabel(/Justification/).fill(`${r.justification} (again)`);
  await dan.getByRole("button", { name: "Submit for review" }).click();
  await dan.getByRole("heading", { name: `${r.justification} (again)` }).waitFor();
  assert.notEqual(dan.url().split("/").pop(), r.id);
  await dan.context().close();
});

test("a failed script shows its error and marks the failing line in the editor", async () => {
  const script = "const r = await db.query('SELECT 1 AS one');\nthrow new Error('boom on line two');";
  const r = await fileQuery(script, `Failing script ${Date.now()}`, "script");
  const dan = await signedIn(browser, DAN);
  await dan.goto(`${BASE}/requests/${r.id}`);
  await dan.getByText("Awaiting review").first().waitFor();
  // Approved while Dan watches: the page follows the run without a reload.
  const review = await call(MAYA, "POST", `/api/v1/requests/${r.id}/reviews`, { decision: "approve", comment: "", revision_hash: r.revision_hash });
  assert.equal(review.status, 200, JSON.stringify(review.body));
  await dan.getByRole("alert").filter({ hasText: "boom on line two" }).waitFor({ timeout: 20_000 });
  const failure = dan.getByRole("alert").filter({ hasText: "(line 2" });
  await failure.waitFor();
  // The position once, though the message carries it too.
  assert.equal((await failure.textContent()).split("(line 2").length, 2, await failure.textContent());
  const marked = dan.locator(".cm-marked");
  await marked.waitFor();
  assert.equal(await marked.count(), 1);
  assert.match(await marked.textContent(), /throw new Error/);
  // The protections the child ran under, and what it used.
  const sandbox = dan.locator(".sandbox-line");
  await sandbox.waitFor();
  assert.match(await sandbox.textContent(), /^Sandbox: seccomp on · Landlock \w+ · no_new_privs on · peak memory \d+\.\d MiB · CPU \d+(\.\d)? ms$/);
  await shot(dan, "request-detail-script-failed");
  await dan.context().close();
});

test("on a portal whose script sandbox is not available, the form says so as a script is written", async () => {
  assert.ok(NO_SANDBOX_BASE, "QUORUM_NO_SANDBOX_URL names the portal without a sandbox");
  const dan = await signedIn(browser, DAN, {}, NO_SANDBOX_BASE);
  await dan.getByRole("link", { name: "New request" }).click();
  await dan.getByRole("heading", { name: "New request" }).waitFor();
  await dan.getByLabel("Kind").selectOption("script");
  await dan.locator(".cm-content").click();
  await dan.keyboard.type("return (await db.query('SELECT 1 AS one')).rows;");
  await dan.getByRole("alert").filter({ hasText: "the portal's script sandbox is not available" }).waitFor();
  await shot(dan, "new-request-no-sandbox");
  // SQL is checked without the sandbox: a query on the same portal still reads as such.
  await dan.getByLabel("Kind").selectOption("query");
  await dan.locator(".cm-content").click();
  await dan.keyboard.press("Control+A");
  await dan.keyboard.type("SELECT id FROM customers");
  await dan.getByText(/Syntax OK/).waitFor();
  assert.equal(await dan.getByRole("alert").filter({ hasText: "sandbox" }).count(), 0);
  await dan.context().close();
});
