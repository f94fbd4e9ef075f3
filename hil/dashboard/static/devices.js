// Devices: each --device server's status (or info), refreshed in place.
"use strict";
(() => {
  const { el, fmt, fmtTime, getJSON, poll } = HIL;

  // Any JSON value as nested tables: objects as key/value rows, lists of objects as tables.
  function view(v) {
    if (Array.isArray(v)) {
      if (v.length && v.every((x) => x && typeof x === "object" && !Array.isArray(x))) {
        const keys = [...new Set(v.flatMap((x) => Object.keys(x)))];
        return el("table", {}, el("thead", {}, el("tr", {}, keys.map((k) => el("th", { text: k })))),
          el("tbody", {}, v.map((x) => el("tr", {}, keys.map((k) => el("td", {}, view(x[k])))))));
      }
      return el("span", { text: v.length ? v.map(fmt).join(", ") : "none" });
    }
    if (v && typeof v === "object") {
      return el("table", { class: "kv" }, el("tbody", {}, Object.entries(v).map(([k, x]) =>
        el("tr", {}, el("th", { text: k }), el("td", {}, view(x))))));
    }
    return el("span", { text: fmt(v) });
  }

  poll(async () => {
    const data = await getJSON("/api/devices");
    const box = document.getElementById("devices");
    if (!data.devices.length) {
      box.replaceChildren(el("p", { class: "muted" },
        "No device servers given: start the dashboard with ", el("code", { text: "--device tcp://host:port" }), "."));
      return;
    }
    box.replaceChildren(...data.devices.map((d) => el("div", { class: "card", "data-device": d.url },
      el("h2", {}, el("code", { text: d.url }), " ",
        el("span", { class: `badge ${d.ok ? "st-ok" : "st-down"}`, text: d.ok ? "up" : "down" }),
        el("span", { class: "muted small", text: d.ok
          ? `  ${d.kind === "status" ? "status" : "info (this server has no status request)"} · polled ${fmtTime(d.polled)}`
          : "" })),
      d.ok ? view(d.data) : el("p", { class: "error", text: d.error }))));
  });
})();
