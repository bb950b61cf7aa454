// Loads the report dashboard in headless Chromium (Debian's /usr/bin/chromium
// via playwright-core) with a key in the URL fragment, waits for it to settle,
// and reports what it drew.
//
// usage: node dashboard.mjs DASHBOARD_URL_WITH_FRAGMENT SCREENSHOT_PATH
// Prints JSON: the page state, console and page errors, points per chart,
// the tiles' text and the number of table rows.
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
const external = [];
page.on("request", (r) => { if (!r.url().startsWith(new URL(url).origin)) external.push(r.url()); });

await page.goto(url);
await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state), null, { timeout: 30000 });
const result = await page.evaluate(() => {
  const charts = {};
  for (const [id, chart] of Object.entries(window.sqiDashboard.charts)) {
    charts[id] = chart.data.datasets.map((d) => d.data.filter((v) => v !== null && v !== undefined).length);
  }
  const text = (id) => document.getElementById(id).textContent;
  return {
    state: document.body.dataset.state,
    status: text("status"),
    charts,
    tiles: { pageviews: text("pageviews"), shares: text("shares"), clickbacks: text("clickbacks"), sqi: text("sqi"), peer: text("sqi-peer") },
    changes: { pageviews: text("pageviews-change"), shares: text("shares-change"), clickbacks: text("clickbacks-change") },
    explain: text("sqi-explain"),
    chart_labels: Object.fromEntries(Object.entries(window.sqiDashboard.charts).map(([id, c]) => [id, c.data.datasets.map((d) => d.label)])),
    selected_rows: [...document.querySelectorAll("#leaderboard tbody tr.selected")].map((tr) => tr.cells[1].textContent),
    top_url_rows: document.querySelectorAll("#top-urls tbody tr").length,
    leaderboard_rows: document.querySelectorAll("#leaderboard tbody tr").length,
    leaderboard_visible: !document.getElementById("leaderboard").hidden,
    data_as_of: text("data-as-of"),
  };
});
await page.screenshot({ path: screenshot, fullPage: true });
await browser.close();
console.log(JSON.stringify({ ...result, errors, external }));
