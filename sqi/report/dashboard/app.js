// The SQI Engine dashboard: a static page that calls the report API with the
// reader's key (kept in this tab's sessionStorage only) and draws the answers
// with Chart.js. Parameters may also come from the URL fragment, which never
// reaches a server: #key=...&publisher=...&period=7d&tz=Europe/Paris
"use strict";

const $ = (id) => document.getElementById(id);
const charts = {};
window.sqiDashboard = { charts };

function fromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const name of ["key", "publisher", "period", "from", "to", "tz"]) {
    if (params.has(name)) $(name).value = params.get(name);
  }
  if (params.has("key")) sessionStorage.setItem("sqi-key", params.get("key"));
  if (!$("key").value) $("key").value = sessionStorage.getItem("sqi-key") || "";
  if (!$("tz").value) $("tz").value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  return params.has("key");
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== "" && value !== undefined && value !== null) url.searchParams.set(name, value);
  }
  const response = await fetch(url, { headers: { Authorization: `Bearer ${$("key").value}` } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function period() {
  const params = { period: $("period").value, tz: $("tz").value };
  if (params.period === "custom") Object.assign(params, { from: $("from").value, to: $("to").value });
  return params;
}

const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());
const percent = (x) => (x === null || x === undefined ? "no previous data" : `${x >= 0 ? "+" : ""}${(x * 100).toFixed(1)}% vs previous`);

function draw(id, config) {
  if (charts[id]) charts[id].destroy();
  charts[id] = new Chart($(id), { ...config, options: { responsive: true, maintainAspectRatio: false, animation: false, ...config.options } });
}

function fillTable(tbody, rows, cells) {
  tbody.replaceChildren(
    ...rows.map((row) => {
      const tr = document.createElement("tr");
      for (const [value, numeric] of cells(row)) {
        const td = document.createElement("td");
        td.textContent = numeric ? number(value) : value ?? "–";
        if (numeric) td.className = "n";
        tr.append(td);
      }
      return tr;
    })
  );
}

async function publisherReport(publisher) {
  const base = `/v1/publishers/${encodeURIComponent(publisher)}`;
  const summary = await api(`${base}/summary`, { ...period(), compare: "previous_period" });
  const [pageviews, shares, clickbacks, channels, urls, history] = await Promise.all([
    api(`${base}/timeseries`, { ...period(), metric: "pageviews" }),
    api(`${base}/timeseries`, { ...period(), metric: "shares" }),
    api(`${base}/timeseries`, { ...period(), metric: "clickbacks" }),
    api(`${base}/channels`, { ...period(), limit: 12 }),
    api(`${base}/top-urls`, { ...period(), limit: 20 }),
    api(`${base}/sqi`, { from: summary.period.from, to: summary.period.to }),
  ]);
  for (const metric of ["pageviews", "shares", "clickbacks"]) {
    $(metric).textContent = number(summary[metric]);
    $(`${metric}-change`).textContent = summary.change ? percent(summary.change[metric]) : "";
  }
  const sqi = summary.sqi || {};
  $("sqi").textContent = sqi.sqi ?? "–";
  $("sqi-peer").textContent = sqi.peer_group
    ? `vs ${sqi.peer_group} (${sqi.peer_count} peers)${sqi.provisional ? ", provisional" : ""}`
    : sqi.reason || "not scored yet";
  $("sqi-explain").textContent = await explain(sqi);

  draw("traffic-chart", {
    type: "line",
    data: {
      labels: pageviews.rows.map((r) => r.bucket),
      datasets: [
        { label: "Pageviews", data: pageviews.rows.map((r) => r.value), yAxisID: "views", borderColor: "#4c78a8" },
        { label: "Shares", data: shares.rows.map((r) => r.value), yAxisID: "social", borderColor: "#f58518" },
        { label: "Clickbacks", data: clickbacks.rows.map((r) => r.value), yAxisID: "social", borderColor: "#54a24b" },
      ],
    },
    options: { scales: { views: { position: "left", beginAtZero: true }, social: { position: "right", beginAtZero: true } } },
  });
  draw("channel-chart", {
    type: "bar",
    data: {
      labels: channels.rows.map((r) => r.channel),
      datasets: [
        { label: "Shares", data: channels.rows.map((r) => r.shares), backgroundColor: "#f58518" },
        { label: "Clickbacks", data: channels.rows.map((r) => r.clickbacks), backgroundColor: "#54a24b" },
      ],
    },
  });
  // By construction of the mid-rank percentile, the peer group's median SQI is 100.
  draw("sqi-chart", {
    type: "line",
    data: {
      labels: history.rows.map((r) => r.date),
      datasets: [
        { label: "SQI", data: history.rows.map((r) => r.sqi), borderColor: "#b279a2" },
        { label: "Peer median", data: history.rows.map(() => 100), borderColor: "#9d9d9d", borderDash: [4, 4], pointRadius: 0 },
      ],
    },
    options: { scales: { y: { min: 0, max: 200 } } },
  });
  fillTable($("top-urls").tBodies[0], urls.rows, (r) => [[r.url], [r.shares, true], [r.clickbacks, true], [r.pageviews, true]]);
  $("publisher-report").hidden = false;
  return summary;
}

const median = (values) => {
  const sorted = values.filter((v) => v !== null && v !== undefined).sort((a, b) => a - b);
  if (!sorted.length) return null;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const times = (x, m) => (x === null || x === undefined || !m ? "–" : `${(x / m).toFixed(1)}×`);

// A score in one line, from its components against the peer group's median
// rates. The peers' rates come from the day's leaderboard (marketer keys);
// a publisher key gets the score's z against its peers instead.
async function explain(sqi) {
  if (sqi.sqi === null || sqi.sqi === undefined) return "";
  const peers = sqi.peer_group === "network" ? "network" : sqi.category;
  if (window.sqiDashboard.scope === "marketer") {
    const board = await api("/v1/sqi/leaderboard", {
      date: sqi.date, category: sqi.peer_group === "network" ? "" : sqi.category, limit: 1000,
    });
    const group = board.rows.filter((r) => r.peer_group === sqi.peer_group);
    return `SQI ${sqi.sqi}: share rate ${times(sqi.share_rate, median(group.map((r) => r.share_rate)))} the ${peers} median, `
      + `clickback rate ${times(sqi.clickback_rate, median(group.map((r) => r.clickback_rate)))}, `
      + `social traffic ${times(sqi.social_traffic_ratio, median(group.map((r) => r.social_traffic_ratio)))}`;
  }
  const z = sqi.score_z === null || sqi.score_z === undefined ? "–" : sqi.score_z.toFixed(2);
  return `SQI ${sqi.sqi}: ${z} standard deviations from the ${peers} median (100)`;
}

async function leaderboard(selected) {
  // A publisher's report shows its own category's board, with its row marked.
  if (selected && !window.sqiDashboard.categoryChosen && !$("category").value && selected.category) {
    if (![...$("category").options].some((o) => o.value === selected.category)) {
      $("category").append(new Option(selected.category, selected.category));
    }
    $("category").value = selected.category;
  }
  const board = await api("/v1/sqi/leaderboard", { category: $("category").value, limit: 50 });
  const categories = new Set([...$("category").options].map((o) => o.value));
  for (const row of board.rows) {
    if (!categories.has(row.category)) {
      categories.add(row.category);
      $("category").append(new Option(row.category, row.category));
    }
  }
  const rows = [...board.rows];
  const publisher = selected && selected.publisher;
  if (publisher && selected.sqi !== null && selected.sqi !== undefined && !rows.some((r) => r.publisher === publisher)) {
    rows.push({ ...selected, rank: "…" });
  }
  fillTable($("leaderboard").querySelector("tbody"), rows, (r) => [
    [r.rank, r.rank !== "…"], [r.publisher], [r.category], [r.sqi, true], [r.peer_group], [r.pageviews, true], [r.shares, true],
  ]);
  for (const tr of $("leaderboard").querySelectorAll("tbody tr")) {
    tr.classList.toggle("selected", tr.cells[1].textContent === publisher);
  }
  $("leaderboard").hidden = false;
  return board.data_as_of;
}

async function show() {
  document.body.dataset.state = "loading";
  $("status").className = "";
  $("status").textContent = "Loading…";
  sessionStorage.setItem("sqi-key", $("key").value);
  try {
    // The key's scope decides what there is to show; a publisher key reads its own publisher.
    const me = await api("/v1/me");
    window.sqiDashboard.scope = me.scope;
    if (me.publisher && !$("publisher").value.trim()) $("publisher").value = me.publisher;
    const publisher = $("publisher").value.trim();
    const marketer = me.scope === "marketer";
    const report = publisher ? await publisherReport(publisher) : null;
    const asOf = [report && report.data_as_of, marketer ? await leaderboard(report && report.sqi) : null].filter(Boolean);
    if (!publisher) $("publisher-report").hidden = true;
    if (!marketer) $("leaderboard").hidden = true;
    $("data-as-of").textContent = asOf.length ? `Data as of ${asOf[0]}` : "";
    $("status").textContent = "";
    document.body.dataset.state = "ready";
  } catch (error) {
    $("status").className = "error";
    $("status").textContent = error.status === 401 ? "That API key is not valid." : error.message;
    document.body.dataset.state = "error";
  }
}

$("query").addEventListener("submit", (event) => {
  event.preventDefault();
  show();
});
$("category").addEventListener("change", () => {
  window.sqiDashboard.categoryChosen = true;
  show();
});
if (fromFragment() && $("key").value) show();
