// One run: curves that grow while it trains, per-epoch table, programming quality,
// conductances, drift, config and events. The same script renders the static report.html,
// where window.HIL_STATIC holds the data and nothing is polled.
"use strict";
(() => {
  const { el, fmt, fmtTime, badge, getJSON, table, keyValues, flatten, plot, poll, warnings } = HIL;
  const STATIC = window.HIL_STATIC || null;
  const base = STATIC ? null : `/api/runs/${window.HIL_RUN}`;
  const state = { detail: null, metrics: [], events: [], matrices: null, status: null,
                  warn: { detail: [], metrics: [], events: [], matrices: [] } };
  const $ = (id) => document.getElementById(id);

  function showWarnings() {
    warnings($("warnings"), [].concat(...Object.values(state.warn)));
  }

  function renderHeader() {
    const d = state.detail;
    $("status").replaceChildren(badge(state.status || d.status));
    $("reason").textContent = d.reason || "";
    const m = d.metric;
    const last = state.metrics[state.metrics.length - 1] || {};
    const best = bestOf(state.metrics, m);
    const facts = {
      task: d.task, rule: d.rule, device: d.device, data: HIL.shortSource(d.data_source),
      epochs: `${state.metrics.length} / ${d.epochs_total ?? "?"}`,
      [`best valid ${m}`]: best ? `${fmt(best[`valid_${m}`])} (epoch ${best.epoch})` : null,
      [`test ${m} at best`]: best ? fmt(best[`test_${m}`]) : null,
      [`last test ${m}`]: last[`test_${m}`],
      "SET pulses": sum(state.metrics, "pulses"),
      "refreshed cells": sum(state.metrics, "refreshes"),
      "wall time (last attempt)": (d.summary || {}).wall_s != null ? `${fmt(d.summary.wall_s)} s` : null,
      started: fmtTime(d.started),
    };
    $("facts").replaceChildren(...Object.entries(facts).map(([k, v]) =>
      el("div", {}, el("span", { class: "label", text: k }), el("span", { class: "value", text: fmt(v) }))));
  }

  const sum = (recs, key) => recs.some((r) => key in r) ? recs.reduce((a, r) => a + (r[key] || 0), 0) : null;

  function bestOf(recs, m) {
    const ok = recs.filter((r) => typeof r[`valid_${m}`] === "number");
    if (!ok.length) return null;
    const better = m === "accuracy" ? (a, b) => a > b : (a, b) => a < b;
    return ok.reduce((b, r) => (better(r[`valid_${m}`], b[`valid_${m}`]) ? r : b));
  }

  function renderCurves() {
    const m = state.detail.metric;
    const x = state.metrics.map((r) => r.epoch);
    const traces = ["train", "valid", "test"].map((split) => ({
      x, y: state.metrics.map((r) => r[`${split}_${m}`] ?? null),
      name: split, mode: "lines+markers", type: "scatter",
    }));
    plot($("curves"), traces, { xaxis: { title: { text: "epoch" }, dtick: x.length < 15 ? 1 : undefined },
                                yaxis: { title: { text: m } } });
    const devRecs = state.metrics.filter((r) => "pulses" in r);
    if (!devRecs.length) {
      $("pulses").replaceChildren(el("p", { class: "muted", text: state.metrics.length
        ? "No device: a software run sends no pulses." : "No epoch finished yet." }));
      $("pulses").classList.remove("plot");
    } else {
      $("pulses").classList.add("plot");
      plot($("pulses"), [
        { x: devRecs.map((r) => r.epoch), y: devRecs.map((r) => r.pulses), name: "SET pulses", type: "bar" },
        { x: devRecs.map((r) => r.epoch), y: devRecs.map((r) => r.refreshes), name: "refreshed cells",
          yaxis: "y2", mode: "lines+markers", type: "scatter" },
      ], { xaxis: { title: { text: "epoch" }, dtick: devRecs.length < 15 ? 1 : undefined },
           yaxis: { title: { text: "SET pulses" } },
           yaxis2: { title: { text: "refreshed cells" }, overlaying: "y", side: "right", rangemode: "tozero",
                     // counts: whole ticks (0 and 1 when nothing was refreshed)
                     dtick: Math.max(...devRecs.map((r) => r.refreshes || 0)) < 6 ? 1 : undefined,
                     range: devRecs.some((r) => r.refreshes) ? undefined : [0, 1] },
           margin: { l: 60, r: 60, t: 10, b: 45 } });
    }
    const m2 = state.detail.metric;
    const cols = [
      { key: "epoch", label: "epoch", num: true },
      { key: `train_${m2}`, label: `train ${m2}`, num: true },
      { key: `valid_${m2}`, label: `valid ${m2}`, num: true },
      { key: `test_${m2}`, label: `test ${m2}`, num: true },
      { key: "lr", label: "lr", num: true },
      { key: "pulses", label: "SET pulses", num: true },
      { key: "refreshes", label: "refreshes", num: true },
      { key: "clipped_updates", label: "clipped", num: true },
      { key: "saturated_cells", label: "saturated", num: true },
      { key: "train_s", label: "train s", num: true },
      { key: "eval_s", label: "eval s", num: true },
      { key: "epoch_s", label: "epoch s", num: true },
      { key: "link_bytes", label: "link bytes", num: true },
      { key: "link_s_est", label: "link s (serial est.)", num: true },
    ].filter((c) => state.metrics.some((r) => c.key in r));
    $("epochs").replaceChildren(state.metrics.length ? table(cols, state.metrics)
      : el("p", { class: "muted", text: "No epoch finished yet." }));
  }

  function renderProgramming() {
    const prog = state.detail.programming;
    if (!prog) {
      $("programming-table").replaceChildren(el("p", { class: "muted",
        text: "No placement on a device (software run, or not programmed yet)." }));
      return;
    }
    const rows = Object.entries(prog).map(([name, r]) => Object.assign({ matrix: name,
      region: (state.detail.placement || {})[name],
      iterations_of_cap: r.max_iterations != null ? `${r.iterations} / ${r.max_iterations}` : r.iterations,
      within: r.cells != null && r.unconverged_cells != null
        ? `${r.cells - (r.faulty_cells || 0) - r.unconverged_cells} / ${r.cells - (r.faulty_cells || 0)}`
        : null,
    }, r));
    const cols = [
      { key: "matrix", label: "matrix" }, { key: "region", label: "region" },
      { key: "rms_error_us", label: "rms error µS", num: true },
      { key: "tolerance_us", label: "tolerance µS", num: true },
      { key: "max_error_us", label: "max error µS", num: true },
      { key: "rms_error_w", label: "rms (weight)", num: true },
      { key: "iterations_of_cap", label: "iter. / cap", num: true },
      { key: "pulses", label: "pulses", num: true },
      { key: "within", label: "cells in tol.", num: true },
      { key: "faulty_cells", label: "faulty cells", num: true },
      { key: "converged", label: "converged" },
    ].filter((c) => rows.some((r) => r[c.key] != null));
    $("programming-table").replaceChildren(table(cols, rows));
  }

  function renderMatrices() {
    const mx = state.matrices;
    if (!mx) return;
    state.warn.matrices = mx.warnings || [];
    const names = Object.keys(mx.matrices);
    $("conductance-source").textContent = names.length
      ? `Before: after programming. Latest: ${mx.latest || "not available yet"}.`
      : "No conductances recorded (software run).";
    const plots = $("programming-plots");
    plots.replaceChildren();
    const box = $("matrices");
    box.replaceChildren();
    for (const name of names) {
      const m = mx.matrices[name];
      if (m.programming) {
        const div = el("div", { class: "plot" });
        plots.append(el("div", { class: "card" }, el("h2", { text: `${name}: programmed against target` }), div));
        const t = m.programming.target, a = m.programming.achieved;
        const lim = Math.max(...t.map(Math.abs), ...a.map(Math.abs), 1e-9);
        plot(div, [
          { x: t, y: a, mode: "markers", type: "scatter", name: name, marker: { size: 3, opacity: 0.5 } },
          { x: [-lim, lim], y: [-lim, lim], mode: "lines", name: "ideal", line: { dash: "dash", color: "#333" } },
        ], { xaxis: { title: { text: "target weight" } }, yaxis: { title: { text: "programmed weight" } },
             showlegend: false });
      }
      const row = el("div", { class: "grid", style: "margin-bottom:1rem" });
      box.append(row);
      if (m.hist) {
        const div = el("div", { class: "plot" });
        row.append(el("div", { class: "card" }, el("h2", { text: `${name}: device conductances` }), div));
        const e = m.hist.edges_us;
        const centres = e.slice(0, -1).map((v, i) => (v + e[i + 1]) / 2);
        const traces = [];
        if (m.hist.before) traces.push({ x: centres, y: m.hist.before, name: "before", type: "bar", opacity: 0.6 });
        if (m.hist.latest) traces.push({ x: centres, y: m.hist.latest, name: "latest", type: "bar", opacity: 0.6 });
        plot(div, traces, { barmode: "overlay", bargap: 0, xaxis: { title: { text: "G (µS)" } },
                            yaxis: { title: { text: "devices" }, type: "log" } });
      }
      if (m.heatmap_us) {
        const div = el("div", { class: "plot" });
        row.append(el("div", { class: "card" }, el("h2", { text: `${name}: net conductance per cell (${m.heatmap_of})` }), div));
        plot(div, [{ z: m.heatmap_us, type: "heatmap", colorscale: "RdBu", zmid: 0,
                     colorbar: { title: { text: "G_net µS" } } }],
             { xaxis: { title: { text: "column" } }, yaxis: { title: { text: "row" }, autorange: "reversed" } });
      }
    }
    showWarnings();
  }

  function renderDrift() {
    const d = state.detail.drift;
    $("drift-card").hidden = !d;
    if (!d) return;
    const m = d.metric;
    const label = (s) => s === 0 ? "0" : s < 3600 ? `${fmt(s)} s` : s < 86400 ? `${fmt(s / 3600)} h` : `${fmt(s / 86400)} d`;
    const traces = Object.entries(d.modes).map(([mode, rows]) => ({
      x: rows.map((r) => label(r.delay_s)), y: rows.map((r) => r[`test_${m}`]),
      name: `compensation ${mode}`, mode: "lines+markers", type: "scatter" }));
    plot($("drift"), traces, { xaxis: { title: { text: `delay after training (checkpoint of epoch ${d.epoch})` }, type: "category" },
                               yaxis: { title: { text: `test ${m}` } } });
  }

  function renderStatic() {
    const d = state.detail;
    $("config").replaceChildren(keyValues(flatten(d.config || {})));
    const info = (d.device_info || {}).info || {};
    $("device").replaceChildren(keyValues(Object.assign(
      { url: d.device, "data source": d.data_source, "comparable to published": d.comparable },
      flatten({ info }), flatten({ placement: d.placement || {} }),
      flatten({ health: d.health || {} }),
      { python: (d.environment || {}).python, host: (d.environment || {}).host,
        "git commit": (d.environment || {}).git_commit })));
  }

  function renderEvents() {
    const rows = [...state.events].reverse();
    $("events").replaceChildren(rows.length ? table([
      { key: "time", label: "time", get: (r) => fmtTime(r.time) },
      { key: "event", label: "event" },
      { key: "fields", label: "details", get: (r) => {
        const rest = Object.assign({}, r); delete rest.time; delete rest.event;
        // numbers rounded as everywhere on the page (4 significant digits)
        return el("code", { text: JSON.stringify(rest, (k, v) =>
          typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v) });
      } },
    ], rows) : el("p", { class: "muted", text: "No events." }));
  }

  function renderAll() {
    renderHeader();
    renderCurves();
    renderProgramming();
    renderDrift();
    renderStatic();
    renderEvents();
    renderMatrices();
    showWarnings();
  }

  async function loadDetail() {
    state.detail = await getJSON(base);
    state.status = state.detail.status;
    state.warn.detail = state.detail.warnings || [];
  }

  async function loadMatrices() {
    state.matrices = await getJSON(`${base}/matrices`);
  }

  // Append new records of metrics/events; start over when the file was rewritten (resume).
  async function follow(kind) {
    const have = state[kind];
    const got = await getJSON(`${base}/${kind}?since=${have.length}`);
    state.warn[kind] = got.warnings || [];
    if (got.reset) state[kind] = got.records;
    else state[kind] = have.concat(got.records);
    return { changed: got.reset || got.records.length > 0, status: got.status };
  }

  async function refresh() {
    const before = state.status;
    const met = await follow("metrics");
    const ev = await follow("events");
    state.status = met.status;
    if (met.status !== before) await loadDetail();
    if (met.changed || met.status !== before) await loadMatrices();
    if (met.changed || ev.changed || met.status !== before) {
      renderHeader();
      renderCurves();
      renderEvents();
      if (met.status !== before) { renderProgramming(); renderDrift(); renderStatic(); }
      if (met.changed || met.status !== before) renderMatrices();
    }
    showWarnings();
  }

  async function start() {
    if (STATIC) {
      Object.assign(state, { detail: STATIC.detail, metrics: STATIC.metrics.records,
                             events: STATIC.events.records, matrices: STATIC.matrices,
                             status: STATIC.detail.status });
      state.warn = { detail: STATIC.detail.warnings || [], metrics: STATIC.metrics.warnings || [],
                     events: STATIC.events.warnings || [], matrices: STATIC.matrices.warnings || [] };
      document.getElementById("updated").textContent = "exported " + fmtTime(STATIC.exported);
      renderAll();
      return;
    }
    await loadDetail();
    await Promise.all([follow("metrics"), follow("events"), loadMatrices()]);
    renderAll();
    HIL.stamp();
    setTimeout(() => poll(refresh), HIL.refreshMs);
  }

  start().catch((err) => HIL.notice(`cannot load this run: ${err.message}`));
})();
