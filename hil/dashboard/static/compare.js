// Compare: overlay the curves of chosen runs and list the config keys that differ.
"use strict";
(() => {
  const { el, fmt, badge, getJSON, table, plot, poll } = HIL;
  const params = new URLSearchParams(window.location.search);
  const chosen = new Set(params.getAll("run"));
  const $ = (id) => document.getElementById(id);

  function setURL() {
    const q = [...chosen].map((id) => "run=" + encodeURIComponent(id)).join("&");
    window.history.replaceState(null, "", "/compare" + (q ? "?" + q : ""));
  }

  function picker(runs) {
    $("picker").replaceChildren(...runs.map((r) => el("label", {},
      el("input", { type: "checkbox", "data-run": r.id, checked: chosen.has(r.id),
        onchange: (e) => { e.target.checked ? chosen.add(r.id) : chosen.delete(r.id); setURL(); refresh(); } }),
      " ", r.name, " ", badge(r.status))));
  }

  function render(data) {
    const split = $("split").value;
    const traces = data.runs.map((r) => ({
      x: r.metrics.map((m) => m.epoch),
      y: r.metrics.map((m) => m[`${split}_${r.metric}`] ?? null),
      name: `${r.name} (${split} ${r.metric})`, mode: "lines+markers", type: "scatter",
    }));
    const metrics = [...new Set(data.runs.map((r) => r.metric))];
    const most = Math.max(0, ...data.runs.map((r) => r.metrics.length));
    plot($("curves"), traces, { xaxis: { title: { text: "epoch" }, dtick: most < 15 ? 1 : undefined },
                                yaxis: { title: { text: `${split} ${metrics.join(" / ") || ""}` } } });
    $("results").replaceChildren(data.runs.length ? table([
      { key: "name", label: "run", get: (r) => el("a", { href: `/run/${r.id}`, text: r.name }) },
      { key: "status", label: "status", get: (r) => badge(r.status) },
      { key: "epochs", label: "epochs", num: true, get: (r) => `${r.epochs_done}/${r.epochs_total ?? "?"}` },
      { key: "best", label: "best valid", num: true, get: (r) => r.best ? `${fmt(r.best.valid)} (ep ${r.best.epoch})` : null },
      { key: "test", label: "test at best", num: true, get: (r) => r.best ? r.best.test : null },
    ], data.runs) : el("p", { class: "muted", text: "Choose runs above." }));
    const keys = Object.entries(data.differing);
    if (data.runs.length < 2) {
      $("differing").replaceChildren(el("p", { class: "muted", text: "Choose two or more runs." }));
    } else if (!keys.length) {
      $("differing").replaceChildren(el("p", { class: "muted", text: "The configs are identical." }));
    } else {
      const rows = keys.map(([k, vals]) => Object.assign({ key: k }, ...vals.map((v, i) => ({ [i]: v }))));
      $("differing").replaceChildren(table([{ key: "key", label: "config key", get: (r) => el("code", { text: r.key }) },
        ...data.runs.map((r, i) => ({ key: String(i), label: r.name, get: (row) => row[i] }))], rows));
    }
    if (data.missing.length) HIL.notice(`unknown run(s): ${data.missing.join(", ")}`);
  }

  let last = null;
  async function refresh() {
    const q = [...chosen].map((id) => "run=" + encodeURIComponent(id)).join("&");
    last = await getJSON("/api/compare?" + q);
    render(last);
  }

  $("split").addEventListener("change", () => last && render(last));
  poll(async () => {
    const runs = await getJSON("/api/runs");
    picker(runs.runs);
    await refresh();
  });
})();
