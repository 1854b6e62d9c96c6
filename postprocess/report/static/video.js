/* vadpipe report: one video's page: player, score curve in step with the playhead, verdicts.
 *
 * Keys: space play/pause; n or j next interval; p or k previous interval;
 * a: the current interval is an anomaly; f: it is a false alarm.
 */
"use strict";

(() => {
  const D = VP.data();
  const V = D.video;
  const key = D.report.storage_key;
  let state = VP.load(key);
  const { el } = VP;
  const SVG = "http://www.w3.org/2000/svg";
  const clips = D.clips;
  const end = Math.max(V.duration_s, clips.t.length ? clips.t[clips.t.length - 1] + V.clip_s : 0, 1e-3);
  let current = -1;  // index of the interval the playhead is in (or was last sent to)

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  const player = D.media.src
    ? el("video", { id: "player", src: D.media.src, controls: true, preload: "auto", playsinline: true })
    : el("div", { id: "player", class: "noplayer", text: D.media.note || "no player" });

  const nav = el("nav", {},
    el("a", { href: D.nav.index, id: "to-index", text: "← all videos" }),
    D.nav.prev ? el("a", { href: D.nav.prev, id: "prev-video", text: "‹ previous video" }) : null,
    D.nav.next ? el("a", { href: D.nav.next, id: "next-video", text: "next video ›" }) : null);

  const verdictBox = el("div", { class: "video-verdict" }, "Video: ",
    el("button", { id: "video-normal", "data-verdict": "normal", onclick: () => setVideo("normal") }, "normal"),
    el("button", { id: "video-anomalous", "data-verdict": "anomalous", onclick: () => setVideo("anomalous") }, "anomalous"),
    el("span", { id: "video-label", class: "status" }));

  const info = el("p", { class: "info" },
    `video score ${VP.fmt(V.video_score)}`,
    V.video_probability !== null && V.video_probability !== undefined ? `, P(anomalous) ${VP.fmt(V.video_probability, 2)}` : "",
    `, ${V.n_intervals} interval(s), ${VP.fmtTime(V.duration_s)}, ${V.n_frames} frames`,
    V.damaged ? el("span", { class: "badge warn", text: "damaged: " + V.damaged }) : null);
  const mediaNote = el("p", { class: "media" },
    D.media.kind === "proxy" ? "Playing an H.264 proxy (" + (D.media.note || "") + "). " : "",
    D.media.source_href ? el("a", { href: D.media.source_href, id: "source-link", text: "source: " + V.source }) : "source: " + V.source);

  // --- the curve ------------------------------------------------------------------------------
  const H = 170, PAD_T = 14, PAD_B = 22;
  const curve = svg("svg", { id: "curve", height: H, role: "img", "aria-label": "weighted T-CAM per clip" });
  let width = 800;
  const x = (t) => (t / end) * width;
  const y = (s) => PAD_T + (1 - Math.max(0, Math.min(1, s))) * (H - PAD_T - PAD_B);
  const playhead = svg("line", { class: "playhead", y1: 0, y2: H - PAD_B });

  function draw() {
    width = Math.max(200, curve.parentNode ? curve.parentNode.clientWidth : 800);
    curve.setAttribute("width", width);
    curve.setAttribute("viewBox", `0 0 ${width} ${H}`);
    curve.replaceChildren();
    curve.append(svg("rect", { class: "plot-bg", x: 0, y: 0, width, height: H - PAD_B }));
    (D.truth || []).forEach(([s, e]) => curve.append(svg("rect", { class: "truth", x: x(s), y: 0, width: Math.max(1, x(e) - x(s)), height: 8 })));
    V.intervals.forEach((iv, i) => {
      const verdict = VP.intervalVerdict(state, V, iv);
      const band = svg("rect", { class: "band" + (verdict ? " " + verdict : "") + (i === current ? " current" : ""),
        "data-index": i, x: x(iv.start_s), y: PAD_T, width: Math.max(2, x(iv.end_s) - x(iv.start_s)), height: H - PAD_T - PAD_B });
      band.append(svg("title", {}));
      band.firstChild.textContent = `interval ${i + 1}: ${VP.fmtTime(iv.start_s)}–${VP.fmtTime(iv.end_s)}, score ${iv.score.toFixed(3)}`;
      curve.append(band);
    });
    curve.append(svg("line", { class: "threshold", x1: 0, x2: width, y1: y(D.report.threshold), y2: y(D.report.threshold) }));
    const mid = V.clip_s / 2;
    const points = clips.t.map((t, i) => `${x(t + mid).toFixed(1)},${y(clips.wtcam[i]).toFixed(1)}`).join(" ");
    curve.append(svg("polyline", { class: "curve", points, "data-points": clips.t.length }));
    const step = niceStep(end / 8);
    for (let t = 0; t <= end + 1e-9; t += step) {
      curve.append(svg("line", { class: "tick", x1: x(t), x2: x(t), y1: H - PAD_B, y2: H - PAD_B + 4 }));
      const anchor = x(t) < 20 ? "start" : x(t) > width - 20 ? "end" : "middle";
      const label = svg("text", { class: "tick-label", x: x(t), y: H - 6, "text-anchor": anchor });
      label.textContent = VP.fmtTime(t).replace(/\.0$/, "");
      curve.append(label);
    }
    curve.append(playhead);
    movePlayhead();
  }

  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-3))));
    return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) || raw;
  }

  function time() { return player.tagName === "VIDEO" ? player.currentTime : 0; }

  function seek(t) {
    if (player.tagName !== "VIDEO") return;
    player.currentTime = Math.max(0, Math.min(t, end));
    movePlayhead();
  }

  function movePlayhead() {
    const t = time();
    playhead.setAttribute("x1", x(t));
    playhead.setAttribute("x2", x(t));
    const inside = V.intervals.findIndex((iv) => t >= iv.start_s && t < iv.end_s);
    if (inside >= 0 && inside !== current) { current = inside; markCurrent(); }
    const clock = document.getElementById("clock");
    if (clock) clock.textContent = VP.fmtTime(t);
  }

  curve.addEventListener("click", (ev) => {
    const band = ev.target.closest && ev.target.closest(".band");
    if (band) {
      current = Number(band.dataset.index);
      seek(V.intervals[current].start_s);
      markCurrent();
      return;
    }
    if (!clips.t.length) return;
    const box = curve.getBoundingClientRect();
    const t = ((ev.clientX - box.left) / box.width) * end;
    let best = 0;  // the clip whose middle is nearest the click
    clips.t.forEach((s, i) => { if (Math.abs(s + V.clip_s / 2 - t) < Math.abs(clips.t[best] + V.clip_s / 2 - t)) best = i; });
    seek(clips.t[best]);
  });

  // --- intervals and verdicts -----------------------------------------------------------------
  const list = el("table", { id: "intervals" });

  function renderList() {
    list.replaceChildren(el("thead", {}, el("tr", {}, ...["#", "start", "end", "score", "peak", "verdict"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...V.intervals.map((iv, i) => {
        const verdict = VP.intervalVerdict(state, V, iv);
        return el("tr", { "data-index": i, class: (i === current ? "current " : "") + (verdict || "") },
          el("td", { text: String(i + 1) }),
          el("td", {}, el("a", { href: "#", class: "seek", onclick: (e) => { e.preventDefault(); current = i; seek(iv.start_s); markCurrent(); } }, VP.fmtTime(iv.start_s))),
          el("td", { text: VP.fmtTime(iv.end_s) }),
          el("td", { class: "num", text: iv.score.toFixed(3) }),
          el("td", {}, el("a", { href: "#", class: "seek-peak", onclick: (e) => { e.preventDefault(); current = i; seek(iv.peak_s); markCurrent(); } }, VP.fmtTime(iv.peak_s))),
          el("td", { class: "verdict" },
            el("button", { class: "anomaly" + (verdict === "anomaly" ? " on" : ""), onclick: () => judgeInterval(i, "anomaly") }, "anomaly"),
            el("button", { class: "false_alarm" + (verdict === "false_alarm" ? " on" : ""), onclick: () => judgeInterval(i, "false_alarm") }, "false alarm")));
      })));
    if (!V.intervals.length) list.append(el("caption", { text: "No interval above the threshold." }));
    const label = VP.videoLabel(state, V);
    document.getElementById("video-normal").classList.toggle("on", label === "normal");
    document.getElementById("video-anomalous").classList.toggle("on", label === "anomalous");
    document.getElementById("video-label").textContent = label ? "label: " + label : "unreviewed";
  }

  function markCurrent() {
    list.querySelectorAll("tbody tr").forEach((tr) => tr.classList.toggle("current", Number(tr.dataset.index) === current));
    curve.querySelectorAll(".band").forEach((b) => b.classList.toggle("current", Number(b.dataset.index) === current));
  }

  function commit() { VP.save(key, state); renderList(); draw(); }

  function judgeInterval(i, verdict) { state = VP.load(key); VP.judgeInterval(state, V, V.intervals[i], verdict); commit(); }

  function setVideo(verdict) { state = VP.load(key); VP.setVideo(state, V, verdict); commit(); }

  function jump(direction) {
    if (!V.intervals.length) return;
    const t = time();
    let i;
    if (direction > 0) i = V.intervals.findIndex((iv) => iv.start_s > t + 0.05);
    else i = V.intervals.map((iv) => iv.start_s < t - 0.5).lastIndexOf(true);
    if (i < 0) i = direction > 0 ? 0 : V.intervals.length - 1;  // wrap around
    current = i;
    seek(V.intervals[i].start_s);
    markCurrent();
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || (ev.target && ["INPUT", "TEXTAREA"].includes(ev.target.tagName))) return;
    const k = ev.key;
    if (k === " " && player.tagName === "VIDEO") {
      ev.preventDefault();
      if (player.paused) player.play(); else player.pause();
    } else if (k === "n" || k === "j") jump(1);
    else if (k === "p" || k === "k") jump(-1);
    else if ((k === "a" || k === "f") && current >= 0) judgeInterval(current, k === "a" ? "anomaly" : "false_alarm");
    else return;
    ev.preventDefault();
  });

  const help = el("p", { class: "help", text: "Keys: space play/pause · n/j next interval · p/k previous · a anomaly · f false alarm. Click a band or the curve to seek." });
  const plot = el("div", { class: "plot" }, curve);
  const legend = el("p", { class: "legend" },
    el("span", { class: "key curve-key" }), " weighted T-CAM per clip ",
    el("span", { class: "key threshold-key" }), ` threshold ${D.report.threshold.toFixed(3)} `,
    el("span", { class: "key band-key" }), " detected interval",
    D.truth ? el("span", {}, " ", el("span", { class: "key truth-key" }), " ground truth") : "",
    " · ", el("span", { id: "clock", text: "0:00.0" }));
  document.getElementById("app").replaceChildren(nav, el("h1", { text: V.name }), info, verdictBox, player, plot, legend, help, list, mediaNote);

  if (player.tagName === "VIDEO") {
    player.addEventListener("timeupdate", movePlayhead);
    player.addEventListener("seeked", movePlayhead);
    const tick = () => { movePlayhead(); if (!player.paused) requestAnimationFrame(tick); };
    player.addEventListener("play", () => requestAnimationFrame(tick));
    const m = /[#&]t=([0-9.]+)/.exec(location.hash);
    if (m) player.addEventListener("loadedmetadata", () => seek(Number(m[1])), { once: true });
  }
  window.addEventListener("resize", draw);
  window.addEventListener("storage", () => { state = VP.load(key); renderList(); draw(); });
  renderList();
  draw();
})();
