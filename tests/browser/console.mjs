// Real-browser test of the operator console, driven by
// tests/tests/browser.rs (console_works_in_a_real_browser), which starts
// FleetPrompt with the shipped rules, a Mattermost stand-in, a site on
// HOST_URL and an empty page server on NEW_HOST_URL. The result is one JSON
// line on stdout.
//
//   FP_URL         FleetPrompt's base URL
//   HOST_URL       a page embedding the widget of a registered site
//   NEW_HOST_URL   a page server for a site registered through the console;
//                  POST /snippet sets what its page embeds
//   EMAIL, PASSWORD  an admin member's sign-in
//   MM_POSTS_URL   returns {"texts": [...]}: what the Mattermost stand-in received
//   SHOT_DIR       where the screenshots go
//   CHROMIUM       the browser binary (default /usr/bin/chromium)
import { chromium } from "playwright-core";
import AxeBuilder from "@axe-core/playwright";

const env = (k, d) => process.env[k] ?? d ?? (() => { throw new Error(`${k} is required`); })();
const FP = env("FP_URL"), HOST = env("HOST_URL"), NEW_HOST = env("NEW_HOST_URL");
const EMAIL = env("EMAIL"), PASSWORD = env("PASSWORD"), MM = env("MM_POSTS_URL");
const SHOTS = env("SHOT_DIR"), BIN = env("CHROMIUM", "/usr/bin/chromium");

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
const result = { axe: {}, page_errors: [] };

// Serious and critical accessibility violations of the page as it is now.
async function axe(page, name, include) {
  let b = new AxeBuilder({ page });
  if (include) b = b.include(include);
  const r = await b.analyze();
  result.axe[name] = r.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

async function signIn(page) {
  await page.locator("#email").fill(EMAIL);
  await page.locator("#password").fill(PASSWORD);
  await page.locator("button[type=submit]", { hasText: "Sign in" }).click();
}

async function openWidget(page) {
  const launch = page.locator("#fleetprompt-chat button.launch");
  await launch.waitFor({ timeout: 15000 });
  await launch.click();
  const skip = page.locator("#fleetprompt-chat button.link", { hasText: "Skip" });
  if (await skip.count()) await skip.click();
}

async function say(page, text) {
  const box = page.locator("#fleetprompt-chat textarea");
  await box.fill(text);
  await box.press("Enter");
  await page.locator("#fleetprompt-chat .m.visitor:not([data-cmid])", { hasText: text }).waitFor({ timeout: 15000 });
}

try {
  // The operator signs in; the first page asked for comes back after.
  const opCtx = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const op = await opCtx.newPage();
  op.on("pageerror", (e) => result.page_errors.push(String(e)));
  await op.goto(`${FP}/console/conversations`);
  await op.waitForURL(/\/console\/login\?next=/);
  await axe(op, "login");
  await signIn(op);
  await op.waitForURL(`${FP}/console/conversations`);
  result.signed_in = await op.locator("header .who").innerText();
  await axe(op, "inbox");
  // Marks this document: a reload would lose it.
  await op.evaluate(() => { window.__stayed = true; });

  // A visitor writes through the widget on another origin.
  const visCtx = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  const vis = await visCtx.newPage();
  vis.on("pageerror", (e) => result.page_errors.push(String(e)));
  await vis.goto(HOST);
  await openWidget(vis);
  await say(vis, "Hello from the visitor");
  await axe(vis, "widget", "#fleetprompt-chat");

  // It appears in the open inbox, live.
  const row = op.locator(".inbox li", { hasText: "Hello from the visitor" });
  await row.waitFor({ timeout: 15000 });
  result.inbox_live = await op.evaluate(() => window.__stayed === true);
  result.unread = await row.evaluate((li) => li.classList.contains("unread"));
  await op.screenshot({ path: `${SHOTS}/console-inbox.png`, fullPage: true });

  // Keyboard: j selects the first row, Enter opens it.
  await op.locator("body").press("j");
  await op.keyboard.press("Enter");
  await op.waitForURL(/\/console\/conversations\/conv_/);
  const conv = op.url().split("/").pop();
  result.conversation_id = conv;
  await axe(op, "conversation");

  // The operator replies; the visitor sees it.
  await op.locator("#reply").fill("Hi! An operator here.");
  await op.locator("button", { hasText: "Send reply" }).click();
  await op.waitForURL(`${FP}/console/conversations/${conv}`);
  await vis.locator("#fleetprompt-chat .m.agent", { hasText: "Hi! An operator here." }).waitFor({ timeout: 15000 });
  result.reply_seen = true;
  // Its progress shows in place, without reloading: the page polls while
  // the reply's directive is pending or running.
  await op.evaluate(() => { window.__stayed = true; });
  await op.locator('#activity li[data-status="done"]', { hasText: "Reply by operator" }).first().waitFor({ timeout: 15000 });
  result.reply_progress_in_place = await op.evaluate(() => window.__stayed === true);

  // Escalate to Mattermost: the rule escalated already, so the button finds
  // that escalation; the timeline shows its attempt and result.
  await op.locator("button", { hasText: "Escalate to Mattermost" }).click();
  await op.waitForURL(`${FP}/console/conversations/${conv}`);
  result.escalate_flash = await op.locator(".flash").innerText();
  const attempt = op.locator("#timeline .timeline li", { hasText: "Attempt 1 of webchat.escalate_to_mattermost" });
  await until("the escalation's attempt in the timeline", async () => {
    if (await attempt.count()) return true;
    await op.reload();
    return false;
  });
  result.escalation_attempt = await attempt.first().innerText();
  result.escalation_result = await op.locator("#timeline .timeline li", { hasText: "webchat.escalation.notified" }).count();
  result.chain = await op.locator("#timeline .chain").evaluate((ul) => ul.querySelectorAll("ul ul").length);
  await op.locator("#timeline details summary").click();
  await op.screenshot({ path: `${SHOTS}/console-conversation.png`, fullPage: true });

  // The Mattermost stand-in got one post for this conversation; its deep
  // link opens the conversation after signing in.
  const texts = (await (await fetch(MM)).json()).texts;
  const mine = texts.filter((t) => t.includes(`/console/conversations/${conv}`));
  result.mattermost_posts = mine.length;
  const link = mine[0].match(/https?:\/\/[^\s)>|]+\/console\/conversations\/conv_[0-9a-f]+/)[0];
  const deepCtx = await browser.newContext();
  const deep = await deepCtx.newPage();
  await deep.goto(link);
  await deep.waitForURL(/\/console\/login\?next=/);
  await signIn(deep);
  await deep.waitForURL(new RegExp(`/console/conversations/${conv}$`));
  result.deep_link = (await deep.locator("h1").innerText()).startsWith("Conversation with");
  await deepCtx.close();

  // Register a site through the console for the new origin; its snippet
  // works on a page there.
  await op.goto(`${FP}/console/sites`);
  await axe(op, "sites");
  await op.locator("#domains").fill(NEW_HOST);
  await op.locator("#title").fill("New shop help");
  await op.locator("button", { hasText: "Register site" }).click();
  await op.waitForURL(/\/console\/sites\/site_/);
  result.register_flash = await op.locator(".flash").innerText();
  const snippet = await op.locator("#snippet").innerText();
  result.snippet = snippet;
  await axe(op, "site");
  const set = await fetch(`${NEW_HOST}/snippet`, { method: "POST", body: snippet });
  if (!set.ok) throw new Error(`setting the snippet: ${set.status}`);
  const nv = await visCtx.newPage();
  nv.on("pageerror", (e) => result.page_errors.push(String(e)));
  await nv.goto(NEW_HOST);
  await openWidget(nv);
  await say(nv, "Hello from the new shop");
  result.new_site_message = true;

  // Verify installation reports success.
  await op.locator("button", { hasText: "Verify installation" }).click();
  const report = op.locator("#verify-report h2");
  await report.waitFor({ timeout: 30000 });
  result.verify = await report.innerText();
  await op.goto(`${FP}/console/sites`);
  await op.screenshot({ path: `${SHOTS}/console-sites.png`, fullPage: true });

  // The rules editor: a file with an error shows it at its line; fixed, the
  // backtest shows counts; published, it acts on the next visitor message.
  await op.goto(`${FP}/console/rules`);
  await axe(op, "rules");
  await op.locator("a", { hasText: "New file" }).click();
  await op.waitForURL(`${FP}/console/rules/new`);
  await axe(op, "rules_new");
  await op.locator("#rule-name").fill("refunds.toml");
  await op.locator("#rule-body").fill("[[rule]]\nid = \"e2e.refund\"\non = 'webchat.message.received\n");
  await op.locator("button[value=check]").click();
  await op.locator("#rule-problems").waitFor({ timeout: 15000 });
  result.rule_problem = await op.locator("#rule-problems li").first().innerText();
  const marked = op.locator("#rule-result ol.code li.bad mark");
  result.rule_marked_visible = await marked.isVisible();
  result.rule_marked_line = await op.locator("#rule-result ol.code li.bad").first().getAttribute("value");
  await axe(op, "rules_problems");
  await op.screenshot({ path: `${SHOTS}/console-rules.png`, fullPage: true });
  await op.locator("#rule-body").fill([
    "[[rule]]",
    'id = "e2e.refund"',
    'on = "webchat.message.received"',
    "when = 'signal.payload.role == \"visitor\" && signal.payload.content.contains(\"refund\")'",
    "",
    "[[rule.directive]]",
    'kind = "noop"',
    'dedupe_key = "e2e-refund:{{ signal.id }}"',
    "",
  ].join("\n"));
  await op.locator("button[value=check]").click();
  result.rule_valid = await op.locator("#rule-result .flash").innerText();
  await op.locator("button[value=backtest]").click();
  await op.locator("#backtest-rules").waitFor({ timeout: 15000 });
  result.backtest_signals = await op.locator("#rule-result p strong").first().innerText();
  await axe(op, "rules_backtest");
  await op.locator("button[value=publish]").click();
  await op.waitForURL(`${FP}/console/rules/files/refunds.toml`);
  result.rule_published = await op.locator(".flash").innerText();
  await say(nv, "Can I get a refund?");
  await op.goto(`${FP}/console/directives?kind=noop`);
  await until("the published rule's directive", async () => {
    if (await op.locator("#main table tbody tr", { hasText: "noop" }).count()) return true;
    await op.reload();
    return false;
  });
  result.rule_took_effect = await op.locator("#main table tbody tr", { hasText: "noop" }).count();
  await axe(op, "directives");

  // Saved replies: one added on its page goes into a conversation's reply
  // box where the cursor is, without a reload.
  await op.goto(`${FP}/console/saved-replies`);
  await op.locator("#title-new").fill("Opening hours");
  await op.locator("#content-new").fill("We answer from 9 to 5, Monday to Friday.");
  await op.locator("button", { hasText: "Add saved reply" }).click();
  await op.waitForURL(`${FP}/console/saved-replies`);
  await axe(op, "saved_replies");
  await op.goto(`${FP}/console/conversations/${conv}`);
  await op.evaluate(() => { window.__stayed = true; });
  await op.locator("#reply").fill("Hello. ");
  await op.locator("#saved").selectOption({ label: "Opening hours" });
  await op.locator("button", { hasText: "Insert into the reply" }).click();
  result.saved_reply_inserted = await op.locator("#reply").inputValue();
  result.saved_reply_in_place = await op.evaluate(() => window.__stayed === true);
  result.saved_reply_focus = await op.evaluate(() => document.activeElement && document.activeElement.id);

  // The other platform pages, for axe.
  for (const [name, path] of [["home", "/console"], ["destinations", "/console/destinations"],
    ["packages", "/console/packages"], ["members", "/console/members"], ["tokens", "/console/tokens"]]) {
    await op.goto(`${FP}${path}`);
    await axe(op, name);
  }

  // A phone's width: the inbox still fits (no sideways scrolling).
  await op.setViewportSize({ width: 390, height: 844 });
  await op.goto(`${FP}/console/conversations?status=all`);
  result.phone_overflow = await op.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await axe(op, "inbox_phone");
  await op.goto(`${FP}/console/conversations/${conv}`);
  result.phone_overflow_conversation = await op.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await op.goto(`${FP}/console/sites`);
  result.phone_overflow_sites = await op.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
