// Runs overview: every run under --runs, sortable, refreshed in place.
"use strict";
(() => {
  const { el, fmt, fmtTime, shortSource, badge, getJSON, poll } = HIL;
  const selected = new Set();
  let rows = [];
  let sortKey = "started";
  let sortDir = -1;

  const metricCell = (r) => {
    if (!r.best) return null;
    return `${r.metric} ${fmt(r.best.valid)} (ep ${r.best.epoch}) · test ${fmt(r.best.test)}`;
  };
  const progress = (r) => {
    const total = r.epochs_total || 0;
    const frac = total ? Math.min(1, (r.epochs_done || 0) / total) : 0;
    return el("span", { style: "white-space:nowrap" },
      el("span", { class: "progress" }, el("span", { style: `width:${(100 * frac).toFixed(0)}%` })),
      `${r.epochs_done ?? "—"} / ${total || "?"}`);
  };
  const columns = [
    { key: "select", label: "", get: (r) => el("input", {
      type: "checkbox", "aria-label": `select ${r.name}`, "data-run": r.id,
      checked: selected.has(r.id),
      onchange: (e) => { e.target.checked ? selected.add(r.id) : selected.delete(r.id); update(); },
    }) },
    { key: "status", label: "status", get: (r) => el("span", { title: r.reason || "" }, badge(r.status)) },
    { key: "name", label: "run", get: (r) => el("span", {},
      el("a", { href: `/run/${r.id}`, text: r.name }),
      (r.warnings || []).length ? el("span", { class: "warn", title: r.warnings.join("\n"), text: " ⚠" }) : null) },
    { key: "task", label: "task" },
    { key: "rule", label: "rule" },
    { key: "device", label: "device", get: (r) => el("code", { text: r.device || "—" }) },
    { key: "data_source", label: "data", get: (r) => el("span", {
      class: "small", title: (r.data_source || "") + (r.comparable === false ? " (not comparable to published figures)" : ""),
      text: shortSource(r.data_source) + (r.comparable === false ? " *" : "") }) },
    { key: "epochs_done", label: "epochs", get: progress },
    { key: "best", label: "best valid · test at best", sortValue: (r) => (r.best ? r.best.valid : null), get: metricCell },
    { key: "started", label: "started", get: (r) => fmtTime(r.started) },
  ];

  function sortValue(r, key) {
    const col = columns.find((c) => c.key === key);
    return col && col.sortValue ? col.sortValue(r) : r[key];
  }

  function sorted() {
    return [...rows].sort((a, b) => {
      const x = sortValue(a, sortKey), y = sortValue(b, sortKey);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
  }

  function header() {
    const tr = document.querySelector("#runs thead tr");
    tr.replaceChildren(...columns.map((c) => {
      if (c.key === "select") return el("th", {});
      const arrow = c.key === sortKey ? (sortDir > 0 ? " ▲" : " ▼") : "";
      return el("th", {
        class: "sortable", "data-key": c.key,
        onclick: () => { sortDir = c.key === sortKey ? -sortDir : 1; sortKey = c.key; update(); },
      }, c.label, el("span", { class: "arrow", text: arrow }));
    }));
  }

  function update() {
    header();
    const body = document.querySelector("#runs tbody");
    body.replaceChildren(...sorted().map((r) => el("tr", { "data-run": r.id, "data-status": r.status },
      columns.map((c) => {
        const v = c.get ? c.get(r) : r[c.key];
        return el("td", {}, v instanceof Node ? v : fmt(v));
      }))));
    document.getElementById("empty").hidden = rows.length > 0;
    const btn = document.getElementById("compare-btn");
    btn.disabled = selected.size < 2;
    btn.onclick = () => {
      const q = [...selected].map((id) => "run=" + encodeURIComponent(id)).join("&");
      window.location.href = "/compare?" + q;
    };
  }

  poll(async () => {
    const data = await getJSON("/api/runs");
    rows = data.runs;
    document.getElementById("roots").textContent = "runs from " + data.roots.join(", ");
    update();
  });
})();
