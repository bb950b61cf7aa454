// Drives the share widget in headless Chromium (Debian's /usr/bin/chromium via
// playwright-core) on a publisher page served from another origin.
//
// usage: node widget.mjs INGEST_BASE_URL SCREENSHOT_PATH
// Prints JSON: for each step, the events the widget sent; plus page errors.
import http from "node:http";
import { chromium } from "playwright-core";

const [ingest, screenshot] = process.argv.slice(2);
const publisher = "widget-test.example";
const html = `<!doctype html><html><head><title>A story worth sharing</title></head>
<body><h1>A story worth sharing</h1><p>Some text.</p><div id="share"></div>
<script async src="${ingest}/widget.js" data-publisher="${publisher}"
        data-channels="facebook,twitter,email" data-target="#share"></script>
</body></html>`;

const server = http.createServer((req, res) => {
  if (req.url.startsWith("/article")) {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(html);
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const page_url = `http://127.0.0.1:${server.address().port}/article`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext();
const page = await context.newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

let sent = [];
page.on("request", (request) => {
  if (request.url().startsWith(`${ingest}/v1/events`) && request.method() === "POST") {
    try { sent.push(...JSON.parse(request.postData()).events); } catch (e) { errors.push("unparsable beacon: " + e); }
  }
});
// Popups go to real social networks, which this machine cannot reach: answer them locally.
await context.route(/^https?:\/\/(?!127\.0\.0\.1)/, (route) => route.fulfill({ status: 204, body: "" }));

async function step(name, action) {
  sent = [];
  await action();
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    await page.waitForTimeout(250);
    if (sent.length > 0) { await page.waitForTimeout(500); break; }
  }
  return { step: name, events: sent.map((e) => ({ type: e.type, channel: e.channel ?? null, url: e.url, publisher: e.publisher })) };
}

const steps = [];
steps.push(await step("load", async () => {
  await page.goto(page_url, { waitUntil: "load" });
  await page.waitForSelector("#share .sqi-share button[data-channel=facebook]");
}));
steps.push(await step("share", async () => {
  const popup = context.waitForEvent("page", { timeout: 5000 }).catch(() => null);
  await page.click("#share button[data-channel=facebook]");
  const opened = await popup;
  if (opened) await opened.close();
}));
steps.push(await step("clickback", async () => {
  await page.goto(`${page_url}?sqi_ch=facebook`, { waitUntil: "load" });
  await page.waitForSelector("#share .sqi-share button");
}));
const cleaned_url = page.url();
if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

await browser.close();
server.close();
console.log(JSON.stringify({ page_url, cleaned_url, steps, errors }));
