/* vadpipe report: the index of all videos (sortable, filterable) and the verdict exports. */
"use strict";

(() => {
  const D = VP.data();
  const key = D.report.storage_key;
  let state = VP.load(key);
  const view = { sort: "video_score", desc: true, flaggedOnly: false, unreviewedOnly: false };
  const COLUMNS = [
    ["name", "video", (v) => v.name.toLowerCase()],
    ["video_score", "video score", (v) => v.video_score],
    ["n_intervals", "intervals", (v) => v.n_intervals],
    ["peak", "peak", (v) => (v.peak === null ? -1 : v.peak)],
    ["duration_s", "duration", (v) => v.duration_s],
  ];
  const app = document.getElementById("app");
  const { el } = VP;

  function summary() {
    const flagged = D.videos.filter((v) => v.n_intervals > 0).length;
    const box = el("section", { class: "summary" },
      el("h1", { text: D.report.title }),
      el("p", { id: "counts", text: `${D.videos.length} videos scored, ${flagged} flagged; ` +
        `${D.not_scored.length} not scored, ${D.damaged.length} damaged. ` +
        `Threshold ${D.report.threshold.toFixed(3)} (${D.report.method})` +
        (D.report.video_threshold ? `, video gate ${D.report.video_threshold.toFixed(3)}` : "") + "." }));
    for (const [id, title, list, field] of [["not-scored", "Not scored", D.not_scored, "reason"],
      ["damaged", "Damaged (scored what could be decoded)", D.damaged, "damage"],
      ["problems", "Report problems", D.problems.map((p) => ({ source: "", text: p })), "text"]]) {
      if (!list.length) continue;
      box.append(el("details", { id, class: "issues" }, el("summary", { text: `${title}: ${list.length}` }),
        el("ul", {}, ...list.map((x) => el("li", {}, el("code", { text: x.source || "" }), " ", String(x[field] || ""))))));
    }
    return box;
  }

  function exportPanel() {
    const status = el("p", { id: "export-status", class: "status" });
    const unflagged = el("input", { type: "checkbox", id: "unflagged-normal" });
    const panel = el("section", { class: "export" },
      el("h2", { text: "Verdicts" }),
      el("p", { id: "verdict-counts" }),
      el("label", {}, unflagged, " count unreviewed videos without intervals as normal"),
      el("div", { class: "buttons" },
        el("button", { id: "export-labels", onclick: () => {
          const r = VP.labelsCsv(state, D.videos, { unflaggedNormal: unflagged.checked });
          VP.download("labels.csv", r.text, "text/csv");
          status.textContent = `labels.csv: ${r.n} videos (${r.left} unreviewed left out` +
            (r.conflicts.length ? `; ${r.conflicts.length} names labelled both ways left out: ${r.conflicts.join(", ")}` : "") + ").";
        } }, "Export labels CSV"),
        el("button", { id: "export-annotations", onclick: () => {
          const r = VP.annotationsTxt(state, D.videos);
          VP.download("annotations.txt", r.text);
          status.textContent = `annotations.txt: ${r.n} anomalous videos with confirmed intervals` +
            (r.missing.length ? `; ${r.missing.length} anomalous without a confirmed interval left out: ${r.missing.join(", ")}` : "") + ".";
        } }, "Export annotations")),
      status);
    return panel;
  }

  function controls() {
    return el("div", { class: "controls" },
      el("label", {}, el("input", { type: "checkbox", id: "flagged-only",
        onchange: (e) => { view.flaggedOnly = e.target.checked; render(); } }), " flagged only"),
      el("label", {}, el("input", { type: "checkbox", id: "unreviewed-only",
        onchange: (e) => { view.unreviewedOnly = e.target.checked; render(); } }), " unreviewed only"));
  }

  const table = el("table", { id: "videos" });

  function render() {
    const col = COLUMNS.find((c) => c[0] === view.sort);
    const sign = view.desc ? -1 : 1;
    const rows = D.videos
      .filter((v) => !view.flaggedOnly || v.n_intervals > 0)
      .filter((v) => !view.unreviewedOnly || VP.videoLabel(state, v) === null)
      .slice()
      .sort((a, b) => {
        const x = col[2](a), y = col[2](b);
        return x < y ? -sign : x > y ? sign : a.id < b.id ? -1 : 1;
      });
    const head = el("tr", {}, el("th", { text: "" }), ...COLUMNS.map(([k, label]) => el("th", {
      "data-sort": k, class: "sortable", "aria-sort": k === view.sort ? (view.desc ? "descending" : "ascending") : null,
      onclick: () => { view.desc = view.sort === k ? !view.desc : k !== "name"; view.sort = k; render(); },
      text: label + (k === view.sort ? (view.desc ? " ▼" : " ▲") : "") })), el("th", { text: "verdict" }));
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows.map((v) => {
      const label = VP.videoLabel(state, v);
      return el("tr", { "data-source": v.source, "data-id": v.id, class: label ? "reviewed " + label : null },
        el("td", { class: "thumbs" }, ...v.thumbs.slice(0, 4).map((t, k) => el("a", { href: v.page + (v.intervals[k] ? "#t=" + v.intervals[k].start_s : "") },
          el("img", { src: t, loading: "lazy", alt: "", title: v.intervals[k] ? "peak of interval " + (k + 1) : "highest score" })))),
        el("td", {}, el("a", { href: v.page, text: v.name }), v.damaged ? el("span", { class: "badge warn", title: v.damaged, text: "damaged" }) : null,
          v.media_kind === "missing" ? el("span", { class: "badge warn", text: "no player" }) : null),
        el("td", { class: "num", text: VP.fmt(v.video_score) }),
        el("td", { class: "num", text: String(v.n_intervals) }),
        el("td", { class: "num", text: VP.fmt(v.peak) }),
        el("td", { class: "num", text: VP.fmtTime(v.duration_s) }),
        el("td", { class: "verdict", text: label || "" }));
    })));
    const labels = D.videos.map((v) => VP.videoLabel(state, v));
    const counts = document.getElementById("verdict-counts");
    if (counts) {
      counts.textContent = `${labels.filter((l) => l === "anomalous").length} anomalous, ` +
        `${labels.filter((l) => l === "normal").length} normal, ${labels.filter((l) => l === null).length} unreviewed.`;
    }
  }

  app.replaceChildren(summary(), exportPanel(), controls(), table);
  render();
  const reload = () => { state = VP.load(key); render(); };
  window.addEventListener("storage", reload);
  window.addEventListener("pageshow", reload);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) reload(); });
})();
