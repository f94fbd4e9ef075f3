// hil dashboard: helpers shared by every page (and by the static report.html).
"use strict";
const HIL = (() => {
  const refreshMs = Number(document.body.dataset.refreshMs || 2000);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function fmt(v) {
    if (v === undefined || v === null) return "—";
    if (typeof v === "number") {
      if (!Number.isFinite(v)) return String(v);
      if (Number.isInteger(v)) return Math.abs(v) >= 10000 ? v.toLocaleString("en-US") : String(v);
      const a = Math.abs(v);
      if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
      return String(Number(v.toPrecision(4)));
    }
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // "jsb-standard:/long/path/file.pickle" -> "jsb-standard: file.pickle"
  const shortSource = (s) => (s ? s.replace(/^([^:]+):.*\/([^/]+)$/, "$1: $2") : "—");

  function fmtTime(t) {
    if (t === undefined || t === null) return "—";
    const d = new Date(t * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status} ${(await r.text()).slice(0, 200)}`);
    return r.json();
  }

  function notice(msg) {
    const box = document.getElementById("notice");
    box.replaceChildren();
    if (msg) box.append(el("div", { class: "error", text: msg }));
  }

  function stamp() {
    const u = document.getElementById("updated");
    if (u) u.textContent = "updated " + fmtTime(Date.now() / 1000);
  }

  function badge(status) {
    return el("span", { class: `badge st-${status}`, text: status });
  }

  function warnings(box, list) {
    box.replaceChildren();
    const items = [...new Set((list || []).filter(Boolean))];
    if (!items.length) return;
    box.append(el("div", { class: "warnings" },
      el("strong", { text: "Warnings" }),
      el("ul", {}, items.map((w) => el("li", { text: w })))));
  }

  // A table from column specs [{key, label, num, get(row) -> value|Node}] and rows.
  function table(columns, rows) {
    const head = el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : null, text: c.label })));
    const body = rows.map((r) => el("tr", {}, columns.map((c) => {
      const v = c.get ? c.get(r) : r[c.key];
      return el("td", { class: c.num ? "num" : null }, v instanceof Node ? v : fmt(v));
    })));
    return el("table", {}, el("thead", {}, head), el("tbody", {}, body));
  }

  function keyValues(obj) {
    const rows = Object.entries(obj || {}).map(([k, v]) => el("tr", {},
      el("th", { text: k }), el("td", {}, v instanceof Node ? v : fmt(v))));
    return el("table", { class: "kv" }, el("tbody", {}, rows));
  }

  function flatten(obj, prefix = "", out = {}) {
    if (obj && typeof obj === "object" && !Array.isArray(obj)) {
      for (const [k, v] of Object.entries(obj)) flatten(v, `${prefix}${k}.`, out);
    } else out[prefix.slice(0, -1)] = obj;
    return out;
  }

  const layoutBase = {
    margin: { l: 60, r: 20, t: 10, b: 45 },
    legend: { orientation: "h", y: -0.2 },
    font: { size: 12 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#fff",
  };

  function plot(div, traces, layout) {
    const merged = Object.assign({}, layoutBase, layout || {});
    return Plotly.react(div, traces, merged, { displaylogo: false, responsive: true });
  }

  // Call fn now and every refreshMs after it settles; errors go to the notice box.
  function poll(fn, ms) {
    const tick = async () => {
      try {
        await fn();
        notice(null);
        stamp();
      } catch (err) {
        notice(`refresh failed: ${err.message}`);
      }
      setTimeout(tick, ms || refreshMs);
    };
    tick();
  }

  return { el, fmt, fmtTime, shortSource, getJSON, notice, stamp, badge, warnings, table, keyValues,
           flatten, plot, poll, refreshMs };
})();
