// Real-browser end-to-end test of the chat widget, driven by
// tests/tests/browser.rs, which starts FleetPrompt, registers a site and
// serves the host pages. Inputs come from the environment; the result is
// one JSON line on stdout.
//
//   FP_URL        FleetPrompt's base URL (serves /widget.js and the API)
//   HOST_URL      a page on an allowed origin that embeds the widget
//   BAD_URL       the same page on an origin the site does not allow
//   ADMIN_TOKEN   the tenant's admin token, to read signals and reply
//   SCREENSHOT    where to save a screenshot of the open widget
//   CHROMIUM      the browser binary (default /usr/bin/chromium)
//   MM_POSTS_URL  returns {"texts": [...]}: what the Mattermost stand-in received
import { chromium } from "playwright-core";

const env = (k, d) => process.env[k] ?? d ?? (() => { throw new Error(`${k} is required`); })();
const FP = env("FP_URL"), HOST = env("HOST_URL"), BAD = env("BAD_URL"), TOKEN = env("ADMIN_TOKEN");
const SHOT = env("SCREENSHOT"), BIN = env("CHROMIUM", "/usr/bin/chromium");
const MM = env("MM_POSTS_URL");

async function admin(path, body) {
  const r = await fetch(FP + path, {
    method: body ? "POST" : "GET",
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await r.json();
  if (!r.ok) throw new Error(`${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

async function until(what, f, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const browser = await chromium.launch({
  executablePath: BIN,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = {};

// The site asks new visitors for a proof of work: time each solve, from the
// challenge's arrival to the bootstrap that carries the answer.
function timeSolves(page, into) {
  let issued = 0;
  page.on("response", (r) => { if (r.url().includes("/v1/widget/challenge")) issued = Date.now(); });
  page.on("request", (r) => {
    if (r.url().includes("/v1/widget/bootstrap") && (r.postData() || "").includes("proof_of_work")) {
      into.push(Date.now() - issued);
    }
  });
}
const solves = [];

try {
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  const page = await ctx.newPage();
  timeSolves(page, solves);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(HOST);
  // Playwright's CSS locators pierce open shadow roots.
  const launch = page.locator("#fleetprompt-chat button.launch");
  await launch.waitFor({ timeout: 15000 });
  await launch.click();
  const skip = page.locator("#fleetprompt-chat button.link", { hasText: "Skip" });
  if (await skip.count()) await skip.click();
  const text = page.locator("#fleetprompt-chat textarea");
  await text.fill("Hello from a real browser");
  await text.press("Enter");
  // Sent once the bubble is no longer pending.
  await page.locator("#fleetprompt-chat .m.visitor:not([data-cmid])", { hasText: "Hello from a real browser" })
    .waitFor({ timeout: 15000 });

  const convs = await until("a conversation", async () => (await admin("/admin/v1/conversations")).conversations[0]);
  result.conversation_id = convs.id;
  const tl = await admin(`/admin/v1/timeline?subject=conversation:${convs.id}`);
  result.message_signal = tl.entries.some((e) => e.entry === "signal" && e.type === "webchat.message.received"
    && e.payload.content === "Hello from a real browser");

  // The team hears of it in Mattermost before anyone replies.
  const post = await until("a Mattermost post", async () =>
    (await (await fetch(MM)).json()).texts.find((t) => t.includes(`/console/conversations/${convs.id}`)));
  result.mattermost_post = post.includes("Hello from a real browser");

  await admin(`/admin/v1/conversations/${convs.id}/reply`, { content: "Hi! An operator here." });
  await page.locator("#fleetprompt-chat .m.agent", { hasText: "Hi! An operator here." }).waitFor({ timeout: 15000 });
  result.reply_seen = true;
  await page.screenshot({ path: SHOT });

  // After a reload the conversation comes back from the history.
  await page.reload();
  await page.locator("#fleetprompt-chat button.launch").click();
  await page.locator("#fleetprompt-chat .m.agent", { hasText: "Hi! An operator here." }).waitFor({ timeout: 15000 });
  result.history_after_reload = true;
  // One solve: the reloaded widget came back with its visitor secret.
  result.main_page_solves = solves.length;
  result.page_errors = errors;

  // More new visitors (fresh browser profiles), for the solve-time figures.
  for (let i = 0; i < 8; i++) {
    const c = await browser.newContext();
    const p = await c.newPage();
    timeSolves(p, solves);
    await p.goto(HOST);
    await p.locator("#fleetprompt-chat button.launch").waitFor({ timeout: 15000 });
    await c.close();
  }
  result.pow_solve_ms = solves;

  // A page on an origin the site does not allow gets no working widget.
  const bad = await ctx.newPage();
  const warnings = [];
  bad.on("console", (m) => warnings.push(m.text()));
  await bad.goto(BAD);
  await until("the refused bootstrap", async () => warnings.some((w) => w.includes("FleetPrompt chat disabled")), 15000);
  result.bad_origin_widget = await bad.locator("#fleetprompt-chat").count();
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
