// TokenTrail dashboard: every figure from the report API (/v1/...), state in the URL, charts drawn as SVG here.
// Money is exact: JSON numbers are read as their digits (exactJSON) and shown from integers of pico-dollars, never
// through floats; floats only place pixels. Data never goes through innerHTML (textContent only).
"use strict";
(() => {
  const body = document.body;
  const form = document.getElementById("f");
  const TOKEN_KEY = "tokentrail.apiToken";
  const TOKEN_REQUIRED = body.dataset.tokenRequired === "true";
  const TRACE_URL = body.dataset.traceUrl || "";
  const FILTERS = ["user_id", "model", "provider", "credential_type", "tags", "tags_match", "service", "environment", "api",
    "operation", "conversation_id", "trace_id"];
  const MORE_FILTERS = FILTERS.slice(6); // in the folded "more filters" part of the form
  const VIEW_DEFAULTS = { bucket: "day", stack: "model", table: "model", n: "10", sort: "total_cost:desc", drill: "" };
  const DIMENSIONS = { model: "Model", provider: "Provider", user: "User", tag: "Tag", credential_type: "Credential type",
    service: "Service", environment: "Environment", api: "API", operation: "Operation", conversation: "Conversation",
    trace: "Trace (agent run)" };
  const STACKS = ["model", "provider", "user", "tag", "credential_type", "service", "environment"];
  // The /v1/requests filter that lists a row's calls (every dimension has one; tags need tags_match=all).
  const DRILL_FILTER = { user: "user_id", model: "model", provider: "provider", credential_type: "credential_type", tag: "tags",
    service: "service", environment: "environment", api: "api", operation: "operation", conversation: "conversation_id",
    trace: "trace_id" };
  const SPIKE_DIMENSIONS = ["model", "provider", "user", "tag", "credential_type", "service", "environment"];
  const METRICS = ["total_cost", "market_cost", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_creation_input_tokens", "reasoning_tokens", "request_count", "unpriced_request_count"];
  const MAX_SERIES = 8; // the rest of a stack is "other"
  const SVG = "http://www.w3.org/2000/svg";
  const started = performance.now();
  let generation = 0;

  // -- exact numbers ------------------------------------------------------------------------------------------------
  // JSON.parse would round 123456.789012345678; every number token becomes its own digits as a string first.
  const exactJSON = (text) => JSON.parse(text.replace(/"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g,
    (m) => (m[0] === '"' ? m : '"' + m + '"')));
  const P = 10n ** 12n; // pico-dollars per dollar: the stored scale of every cost
  function pico(s) {
    const neg = s.startsWith("-"), [i, f = ""] = (neg ? s.slice(1) : s).split(".");
    const v = BigInt(i + (f + "000000000000").slice(0, 12));
    return neg ? -v : v;
  }
  const group = (digits) => digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const count = (s) => (s == null ? "–" : group(String(s)));
  function usdPico(p) {
    const sign = p < 0n ? "-" : "";
    if (p < 0n) p = -p;
    if (p === 0n || p >= P / 100n) { // to the cent
      const cents = (p + P / 200n) / (P / 100n);
      return sign + "$" + group(String(cents / 100n)) + "." + String(cents % 100n).padStart(2, "0");
    }
    const unit = 10n ** BigInt(Math.max(String(p).length - 2, 0)); // under a cent: two significant digits
    const rounded = ((p + unit / 2n) / unit) * unit;
    return sign + "$0." + String(rounded).padStart(12, "0").replace(/0+$/, "");
  }
  const usd = (s) => (s == null ? "unknown" : usdPico(pico(s)));
  const perRequest = (cost, n) => (cost == null || !BigInt(n) ? null : (pico(cost) + BigInt(n) / 2n) / BigInt(n));
  function percent(part, whole) { // one decimal, exact rounding
    if (!whole) return "0";
    const tenths = (part * 1000n + whole / 2n) / whole;
    return String(tenths / 10n) + "." + String(tenths % 10n);
  }

  // -- dates (UTC days, as the report reads them) ---------------------------------------------------------------
  const iso = (d) => d.toISOString().slice(0, 10);
  const day = (s) => new Date(s + "T00:00:00Z");
  const addDays = (s, n) => iso(new Date(day(s).getTime() + n * 864e5));
  function buckets(start, end, unit) {
    const out = [], last = day(end).getTime();
    let t = day(start).getTime();
    if (unit === "week") t -= ((new Date(t).getUTCDay() + 6) % 7) * 864e5; // ISO weeks start on Monday
    if (unit === "month") return months(start, end);
    for (; t <= last; t += unit === "week" ? 7 * 864e5 : 864e5) {
      const d = iso(new Date(t));
      if (unit === "hour") for (let h = 0; h < 24; h++) out.push(d + "T" + String(h).padStart(2, "0"));
      else out.push(d);
    }
    return out;
  }
  function months(start, end) {
    const out = [];
    for (let [y, m] = start.slice(0, 7).split("-").map(Number); `${y}-${String(m).padStart(2, "0")}` <= end.slice(0, 7);
      m === 12 ? (y++, m = 1) : m++) out.push(`${y}-${String(m).padStart(2, "0")}`);
    return out;
  }

  // -- state: the URL is the only place it lives --------------------------------------------------------------------
  function readState() {
    const q = new URLSearchParams(location.search), s = {};
    s.end_date = q.get("end_date") || iso(new Date());
    s.start_date = q.get("start_date") || addDays(s.end_date, -29);
    for (const k of FILTERS) s[k] = q.get(k) || "";
    s.tags_match = s.tags_match || "any";
    for (const [k, v] of Object.entries(VIEW_DEFAULTS)) s[k] = q.get(k) || v;
    return s;
  }
  function stateURL(s) {
    const q = new URLSearchParams({ start_date: s.start_date, end_date: s.end_date });
    for (const k of FILTERS) if (s[k] && !(k === "tags_match" && (!s.tags || s[k] === "any"))) q.set(k, s[k]);
    for (const [k, v] of Object.entries(VIEW_DEFAULTS)) if (s[k] && s[k] !== v) q.set(k, s[k]);
    return "?" + q;
  }
  function navigate(s) {
    history.pushState(null, "", stateURL(s));
    render(readState());
  }
  function formState() {
    const s = readState();
    for (const [k, v] of new FormData(form)) s[k] = String(v).trim();
    return s;
  }
  function fillForm(s) {
    for (const field of form.elements) if (field.name && field.name in s) field.value = s[field.name];
    if (MORE_FILTERS.some((k) => s[k])) document.getElementById("more-filters").open = true; // never a hidden filter
  }
  const filterParams = (s) => {
    const p = { start_date: s.start_date, end_date: s.end_date };
    for (const k of FILTERS) if (s[k] && (k !== "tags_match" || s.tags)) p[k] = s[k];
    return p;
  };

  // -- the API ------------------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  const authHeaders = () => {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: "Bearer " + token } : {};
  };
  const apiURL = (path, params) => path + "?" + new URLSearchParams(params);
  async function api(path, params) {
    const r = await fetch(apiURL(path, params), { headers: { Accept: "application/json", ...authHeaders() } });
    const text = await r.text();
    let data = null;
    try { data = exactJSON(text); } catch (e) { data = null; }
    if (!r.ok) throw new ApiError(r.status, (data && data.error && data.error.message) || r.status + " " + r.statusText);
    return data;
  }

  // -- DOM helpers --------------------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) node.setAttribute(k, v);
    for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text != null) node.textContent = text;
    return node;
  }
  function table(node, head, rows) {
    node.tHead.replaceChildren(el("tr", null, ...head));
    node.tBodies[0].replaceChildren(...rows);
  }
  const simpleTable = (cols, rows) => {
    const t = el("table", null, el("thead"), el("tbody"));
    table(t, cols.map(([, label, cls]) => el("th", { class: cls }, label)),
      rows.map((r) => el("tr", null, ...cols.map(([get, , cls]) => el("td", { class: cls }, get(r))))));
    return t;
  };
  const keyText = (v) => (v == null ? "(none)" : v);

  // -- headline figures ----------------------------------------------------------------------------------------------
  function setMetric(name, value, text) {
    const node = document.querySelector(`[data-metric="${name}"]`);
    node.dataset.value = value == null ? "null" : value;
    const big = node.querySelector(".big");
    (big || node).textContent = text;
  }
  function renderTotals(s, totals, byCredential) {
    const row = totals.results[0] || Object.fromEntries(METRICS.map((m) => [m, "0"]));
    for (const m of ["total_cost", "market_cost"]) setMetric(m, row[m], usd(row[m]));
    for (const m of ["request_count", "input_tokens", "output_tokens", "unpriced_request_count"]) setMetric(m, row[m], count(row[m]));
    const byok = byCredential.results.find((r) => r.credential_type === "byok") || { request_count: "0", market_cost: "0" };
    setMetric("byok_request_count", byok.request_count, count(byok.request_count));
    setMetric("byok_market_cost", byok.market_cost, usd(byok.market_cost));
    const share = percent(BigInt(byok.request_count), BigInt(row.request_count));
    setMetric("byok_share", share, share + " %");
    document.getElementById("unpriced-link").href =
      stateURL({ ...s, table: "model", sort: "unpriced_request_count:desc" }) + "#top";
    document.getElementById("unpriced-note").hidden = row.unpriced_request_count === "0";
  }

  // -- cost over time --------------------------------------------------------------------------------------------------
  function niceStep(max) {
    const raw = max / 4, mag = 10 ** Math.floor(Math.log10(raw));
    return [1, 2, 2.5, 5, 10].map((k) => k * mag).find((v) => v >= raw);
  }
  const shortLabel = (b, unit) => (unit === "hour" ? b.slice(5).replace("T", " ") + "h" : unit === "month" ? b : b.slice(5));
  function renderChart(s, data) {
    const chart = document.querySelector("svg[data-chart]"), legend = document.getElementById("legend");
    const keys = buckets(s.start_date, s.end_date, s.bucket), at = new Map(keys.map((k, i) => [k, i]));
    const dim = s.stack === "none" ? null : s.stack;
    const totals = new Map();
    for (const r of data.results) {
      const name = dim ? keyText(r[dim]) : "cost";
      totals.set(name, (totals.get(name) || 0) + Number(r.total_cost || 0));
      if (!at.has(r[s.bucket])) { at.set(r[s.bucket], keys.length); keys.push(r[s.bucket]); }
    }
    const ranked = [...totals].filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]).map(([k]) => k);
    const named = ranked.length > MAX_SERIES ? ranked.slice(0, MAX_SERIES - 1) : ranked;
    const series = ranked.length > named.length ? [...named, "other"] : named;
    const index = new Map(series.map((k, i) => [k, i]));
    const cells = keys.map(() => new Array(series.length).fill(0));
    for (const r of data.results) {
      const i = index.get(dim ? keyText(r[dim]) : "cost") ?? index.get("other");
      if (i != null && r.total_cost != null) cells[at.get(r[s.bucket])][i] += Number(r.total_cost);
    }
    const W = Math.max(chart.clientWidth, 320), H = 260, L = 70, B = 22, T = 10, R = 10;
    chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const max = Math.max(0, ...cells.map((c) => c.reduce((a, b) => a + b, 0)));
    const nodes = [];
    const note = document.getElementById("chart-note");
    note.textContent = data.truncated ? "More rows matched than the API returns at once: the chart shows part of the range." : "";
    if (max > 0) {
      const step = niceStep(max), top = Math.ceil(max / step) * step, y = (v) => T + (H - T - B) * (1 - v / top);
      for (let v = 0; v <= top + step / 2; v += step) {
        nodes.push(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
          svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, usdPico(BigInt(Math.round(v * 1e12)))));
      }
      const bw = (W - L - R) / keys.length, gap = bw > 4 ? bw * 0.15 : 0;
      keys.forEach((k, i) => {
        let acc = 0;
        cells[i].forEach((v, j) => {
          if (v <= 0) return;
          const rect = svg("rect", { class: "s" + (j === MAX_SERIES - 1 && series[j] === "other" ? 8 : j),
            x: L + i * bw + gap / 2, width: Math.max(bw - gap, 0.5), y: y(acc + v), height: Math.max(y(acc) - y(acc + v), 0.5) });
          rect.append(svg("title", {}, `${k} · ${series[j]}: $${v.toPrecision(4)}`));
          nodes.push(rect);
          acc += v;
        });
      });
      const every = Math.ceil(keys.length / Math.max(Math.floor((W - L) / 80), 1));
      keys.forEach((k, i) => {
        if (i % every === 0) nodes.push(svg("text", { x: L + (i + 0.5) * bw, y: H - 6, "text-anchor": "middle" }, shortLabel(k, s.bucket)));
      });
    } else {
      nodes.push(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "No priced cost in this range"));
    }
    chart.replaceChildren(...nodes);
    legend.replaceChildren(...series.map((k, j) =>
      el("li", null, el("span", { class: "s" + (j === MAX_SERIES - 1 && k === "other" ? 8 : j) }), k)));
    if (dim === "tag") note.textContent += " Tags overlap: a request counts in each of its tags.";
  }

  // -- top-N table --------------------------------------------------------------------------------------------------
  function tableQuery(s) {
    const [col] = s.sort.split(":");
    const server = col !== "cost_per_request"; // not a report metric: sorted here, over the 1,000 costliest rows
    return { ...filterParams(s), group_by: s.table, order_by: server ? s.sort : "total_cost:desc", limit: server ? s.n : "1000" };
  }
  function compareBy(col, dir) {
    const value = (r) => (col === "cost_per_request" ? perRequest(r.total_cost, r.request_count)
      : col === "total_cost" || col === "market_cost" ? (r[col] == null ? null : pico(r[col]))
        : METRICS.includes(col) ? BigInt(r[col]) : r[col]);
    return (a, b) => {
      const x = value(a), y = value(b);
      if (x == null || y == null) return x == null ? (y == null ? 0 : 1) : -1; // unknown last
      return (x < y ? -1 : x > y ? 1 : 0) * (dir === "asc" ? 1 : -1);
    };
  }
  function renderTable(s, data) {
    const t = document.querySelector('table[data-table="top"]');
    const [col, dir = col === s.table ? "asc" : "desc"] = s.sort.split(":");
    let rows = data.results;
    if (col === "cost_per_request") rows = [...rows].sort(compareBy(col, dir)).slice(0, Number(s.n));
    const cols = [[s.table, DIMENSIONS[s.table] || s.table, "text"], ["total_cost", "Cost"], ["market_cost", "Market cost"],
      ["input_tokens", "Input tokens"], ["output_tokens", "Output tokens"], ["request_count", "Requests"],
      ["cost_per_request", "Cost / request"], ["unpriced_request_count", "Unpriced"]];
    const head = cols.map(([key, label, cls]) => {
      const button = el("button", { type: "button", "data-sort": key }, label + (key === col ? (dir === "asc" ? " ▲" : " ▼") : ""));
      button.addEventListener("click", () => {
        const next = key === col ? (dir === "asc" ? "desc" : "asc") : key === s.table ? "asc" : "desc";
        navigate({ ...s, sort: key + ":" + next });
      });
      return el("th", { class: cls, "aria-sort": key === col ? (dir === "asc" ? "ascending" : "descending") : null }, button);
    });
    const drillable = s.table in DRILL_FILTER && !(s.table === "tag" && s.tags_match !== "all" && s.tags.includes(","));
    const trs = rows.map((r) => {
      const key = r[s.table], drill = key == null ? "" : s.table + ":" + key;
      const cell = el("td", { class: "text" }, s.table === "trace" && key != null ? traceLink(key) : keyText(key), " ");
      if (drillable && key != null) {
        const b = el("button", { type: "button", "data-drill": drill, title: "the calls behind this row" }, "calls ›");
        b.addEventListener("click", () => navigate({ ...s, drill }));
        cell.append(b);
      }
      const cpr = perRequest(r.total_cost, r.request_count);
      return el("tr", { "data-key": keyText(key), class: drill && drill === s.drill ? "selected" : null }, cell,
        el("td", null, usd(r.total_cost)), el("td", null, usd(r.market_cost)), el("td", null, count(r.input_tokens)),
        el("td", null, count(r.output_tokens)), el("td", null, count(r.request_count)),
        el("td", null, cpr == null ? "unknown" : usdPico(cpr)), el("td", null, count(r.unpriced_request_count)));
    });
    table(t, head, trs.length ? trs : [el("tr", null, el("td", { colspan: cols.length, class: "text" }, "No usage in this range."))]);
    const notes = [];
    if (s.table === "tag") notes.push("Tag rows overlap: a request counts in each of its tags, untagged requests in none.");
    if (col === "cost_per_request") notes.push("Sorted by cost per request among the 1,000 costliest rows.");
    if (!drillable && s.table in DIMENSIONS) notes.push(`Calls are listed by ${Object.keys(DRILL_FILTER).join(", ")}.`);
    document.getElementById("table-note").textContent = notes.join(" ");
    const csv = document.getElementById("csv");
    csv.href = apiURL("/v1/report", { ...tableQuery(s), format: "csv" });
    csv.download = `tokentrail-${s.table}-${s.start_date}-${s.end_date}.csv`;
  }
  // With a token the plain link would be a 401: fetch with the header and save what came back.
  document.getElementById("csv").addEventListener("click", async (e) => {
    const headers = authHeaders();
    if (!headers.Authorization) return;
    e.preventDefault();
    const link = e.currentTarget, r = await fetch(link.href, { headers });
    if (!r.ok) return showError(new ApiError(r.status, "the CSV download failed: " + r.status));
    const url = URL.createObjectURL(await r.blob());
    const a = el("a", { href: url, download: link.download });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });

  // -- drill-down: the calls behind a row ------------------------------------------------------------------------
  let callsCursor = null;
  function drillParams(s) {
    const i = s.drill.indexOf(":"), dim = s.drill.slice(0, i), value = s.drill.slice(i + 1), p = filterParams(s);
    if (dim === "tag") {
      p.tags = s.tags && s.tags_match === "all" ? s.tags + "," + value : value;
      p.tags_match = "all";
    } else p[DRILL_FILTER[dim]] = value;
    return [dim, value, { ...p, limit: "50" }];
  }
  const traceLink = (id) => {
    if (!id) return "";
    if (!TRACE_URL) return el("code", { title: id }, id.slice(0, 12) + "…");
    return el("a", { href: TRACE_URL.split("{trace_id}").join(encodeURIComponent(id)), target: "_blank",
      rel: "noopener noreferrer", title: id, "data-trace": id }, id.slice(0, 12) + "…");
  };
  const CALL_COLUMNS = [["Time (UTC)", (c) => String(c.timestamp).replace("T", " ").slice(0, 19), "text"],
    ["Service", (c) => keyText(c.service), "text"], ["Model", (c) => c.model, "text"], ["Provider", (c) => c.provider, "text"],
    ["User", (c) => keyText(c.user !== undefined ? c.user : c.user_id), "text"], ["Tags", (c) => (c.tags || []).join(", "), "text"],
    ["Credential", (c) => keyText(c.credential_type), "text"], ["Input", (c) => count(c.input_tokens)],
    ["Output", (c) => count(c.output_tokens)], ["Cost", (c) => usd(c.total_cost)], ["Market", (c) => usd(c.market_cost)],
    ["Price", (c) => c.price_status, "text"], ["ms", (c) => count(c.duration_ms)], ["Stream", (c) => (c.streamed ? "yes" : "")],
    ["Status", (c) => keyText(c.status), "text"], ["Trace", (c) => traceLink(c.trace_id), "text"]];
  const callRow = (c) => el("tr", { "data-call": c.span_id || "" }, ...CALL_COLUMNS.map(([, get, cls]) => el("td", { class: cls }, get(c))));
  async function renderCalls(s, gen, more) {
    const section = document.getElementById("calls");
    if (!s.drill) { section.hidden = true; return; }
    const [dim, value, params] = drillParams(s);
    section.hidden = false;
    document.getElementById("h-calls").textContent = `Calls: ${DIMENSIONS[dim] || dim} ${value}`;
    document.getElementById("close-calls").href = stateURL({ ...s, drill: "" });
    const t = section.querySelector("table"), note = document.getElementById("calls-note");
    if (more) params.cursor = callsCursor;
    let data;
    try { data = await api("/v1/requests", params); } catch (e) {
      if (e.status === 401) throw e;
      note.textContent = e.status === 404 ? "This server does not list calls (GET /v1/requests)." : e.message;
      return;
    }
    if (gen !== generation) return;
    callsCursor = data.next_cursor || null;
    const rows = data.results.map(callRow);
    if (more) t.tBodies[0].append(...rows);
    else table(t, CALL_COLUMNS.map(([label, , cls]) => el("th", { class: cls }, label)), rows);
    note.textContent = t.tBodies[0].rows.length ? `Newest first; ${t.tBodies[0].rows.length} shown.` : "No calls.";
    document.getElementById("more-calls").hidden = !callsCursor;
  }
  document.getElementById("more-calls").addEventListener("click", () => renderCalls(readState(), generation, true).catch(showError));

  // -- budgets, spikes, margins ------------------------------------------------------------------------------------
  async function optional(id, load, draw, how) {
    const content = document.querySelector(`#${id} .content`);
    try { content.replaceChildren(draw(await load())); } catch (e) {
      if (e.status === 401) throw e;
      content.replaceChildren(e.status === 404 ? el("p", { class: "muted", "data-empty": "not-configured" }, "Not configured: ", el("code", null, how))
        : el("p", { class: "error" }, e.message));
    }
  }
  const budgetsView = (data) => (data.results.length ? simpleTable([
    [(r) => r.budget + (r.value != null ? " · " + r.value : ""), "Budget", "text"], [(r) => r.period, "Period", "text"],
    [(r) => usd(r.spend), "Spend"], [(r) => usd(r.amount), "Amount"],
    [(r) => (r.percent == null ? "–" : el("meter", { min: 0, max: 100, value: r.percent, title: r.percent + " %" })), "Used"],
    [(r) => (r.percent == null ? "–" : r.percent + " %"), "%"], [(r) => usd(r.projected_spend), "Projected"],
    [(r) => (r.crossed.length ? r.crossed.join(", ") + " %" : "–"), "Crossed"]], data.results) : el("p", { class: "muted" }, "No budgets."));
  function spikesView(data) {
    const when = `${data.window} ${String(data.window_start).slice(0, 16).replace("T", " ")} UTC vs ${data.baseline_windows} earlier`;
    if (!data.results.length) return el("p", { class: "muted" }, data.note || `No ${data.metric} spikes by ${data.dimension} (${when}).`);
    const wrap = el("div", null, el("p", { class: "muted" }, `${data.dimension}, ${when}`));
    wrap.append(simpleTable([[(r) => keyText(r.value), "Value", "text"], [(r) => usd(r.observed), "Observed"],
      [(r) => usd(r.expected), "Expected"], [(r) => (r.ratio == null ? "–" : r.ratio + "×"), "Ratio"]], data.results));
    return wrap;
  }
  const marginsView = (data) => (data.results.length ? simpleTable([[(r) => keyText(r.user), "Customer", "text"],
    [(r) => keyText(r.plan), "Plan", "text"], [(r) => usd(r.revenue), "Revenue"], [(r) => usd(r.cost), "Cost"],
    [(r) => usd(r.margin), "Margin"], [(r) => (r.margin_percent == null ? "–" : r.margin_percent + " %"), "%"]], data.results)
    : el("p", { class: "muted" }, "No customers in this range."));

  // -- the page -----------------------------------------------------------------------------------------------------
  function askToken(message) {
    document.getElementById("token").hidden = false;
    document.getElementById("token-error").textContent = message || "";
    document.getElementById("data").hidden = true;
    form.hidden = true;
    body.dataset.state = "token";
    document.querySelector("#token-form input").focus();
  }
  function showError(e) {
    if (e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      return askToken("The server refused that token: enter it again.");
    }
    const node = document.getElementById("error");
    node.hidden = false;
    node.textContent = e.message;
    body.dataset.state = "error";
  }
  async function render(s) {
    const gen = ++generation;
    fillForm(s);
    document.getElementById("error").hidden = true;
    document.getElementById("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
    if (TOKEN_REQUIRED && !sessionStorage.getItem(TOKEN_KEY)) return askToken();
    document.getElementById("token").hidden = true;
    document.getElementById("data").hidden = false;
    form.hidden = false;
    body.dataset.state = "loading";
    document.getElementById("range-label").textContent = `${s.start_date} to ${s.end_date} (UTC)`;
    const f = filterParams(s);
    const chartDim = s.stack === "none" ? "day" : s.stack;
    try {
      const [totals, byCredential, overTime, top] = await Promise.all([
        api("/v1/report", { ...f, group_by: "none" }),
        api("/v1/report", { ...f, group_by: "credential_type" }),
        api("/v1/report", { ...f, group_by: chartDim, date_part: s.bucket }),
        api("/v1/report", tableQuery(s)),
        renderCalls(s, gen, false),
        optional("budgets", () => api("/v1/budgets", {}), budgetsView, "tokentrail serve --budgets FILE"),
        optional("spikes", () => api("/v1/spikes", { dimension: SPIKE_DIMENSIONS.includes(s.table) ? s.table : "model" }),
          spikesView, "GET /v1/spikes"),
        optional("margins", () => api("/v1/margins", { start_date: s.start_date, end_date: s.end_date, by: "customer" }),
          marginsView, "tokentrail serve --revenue FILE"),
      ]);
      if (gen !== generation) return;
      renderTotals(s, totals, byCredential);
      renderChart(s, overTime);
      renderTable(s, top);
      body.dataset.state = "ready";
      if (!body.dataset.firstRenderMs) body.dataset.firstRenderMs = String(Math.round(performance.now() - started));
    } catch (e) {
      if (gen === generation) showError(e);
    }
  }

  // -- wiring --------------------------------------------------------------------------------------------------------
  for (const select of document.querySelectorAll("select.dims")) {
    for (const [k, label] of Object.entries(DIMENSIONS)) {
      if (select.name !== "stack" || STACKS.includes(k)) select.append(el("option", { value: k }, label));
    }
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const s = formState();
    if (!s.sort.startsWith(s.table + ":") && !METRICS.includes(s.sort.split(":")[0]) && !s.sort.startsWith("cost_per_request")) {
      s.sort = VIEW_DEFAULTS.sort; // a key sort of the previous dimension
    }
    navigate(s);
  });
  for (const select of document.querySelectorAll("select")) select.addEventListener("change", () => form.requestSubmit());
  for (const b of document.querySelectorAll("[data-days]")) {
    b.addEventListener("click", () => {
      form.elements.end_date.value = iso(new Date());
      form.elements.start_date.value = addDays(iso(new Date()), 1 - Number(b.dataset.days));
      form.requestSubmit();
    });
  }
  document.getElementById("close-calls").addEventListener("click", (e) => {
    e.preventDefault();
    navigate({ ...readState(), drill: "" });
  });
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, e.target.elements.token.value.trim());
    e.target.reset();
    render(readState());
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    render(readState());
  });
  window.addEventListener("popstate", () => render(readState()));
  render(readState());
})();
