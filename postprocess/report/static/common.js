/* vadpipe report: data, verdict storage and the two exports shared by the index and video pages.
 *
 * Verdicts are kept in localStorage under the report's key:
 *   {videos: {<source>: {video: "normal"|"anomalous"|null, intervals: {"<start_frame>-<end_frame>": "anomaly"|"false_alarm"}}}}
 * A video's label is its own verdict, else what its intervals say: one confirmed anomaly makes it
 * anomalous, all of its intervals rejected as false alarms make it normal, anything else is unreviewed.
 */
"use strict";

const VP = (() => {
  function data() {
    return JSON.parse(document.getElementById("report-data").textContent);
  }

  function load(key) {
    try {
      const state = JSON.parse(localStorage.getItem(key));
      if (state && typeof state.videos === "object") return state;
    } catch (e) { /* storage off or corrupted: start empty */ }
    return { videos: {} };
  }

  function save(key, state) {
    try { localStorage.setItem(key, JSON.stringify(state)); } catch (e) { /* private mode: verdicts last the page */ }
  }

  function entry(state, source) {
    if (!state.videos[source]) state.videos[source] = { video: null, intervals: {} };
    return state.videos[source];
  }

  function intervalKey(iv) { return iv.start_frame + "-" + iv.end_frame; }

  function intervalVerdict(state, video, iv) {
    const e = state.videos[video.source];
    return (e && e.intervals[intervalKey(iv)]) || null;
  }

  /* "anomalous", "normal" or null (unreviewed). */
  function videoLabel(state, video) {
    const e = state.videos[video.source];
    if (!e) return null;
    if (e.video) return e.video;
    const verdicts = video.intervals.map((iv) => e.intervals[intervalKey(iv)]);
    if (verdicts.includes("anomaly")) return "anomalous";
    if (verdicts.length && verdicts.every((v) => v === "false_alarm")) return "normal";
    return null;
  }

  /* Set (or, given the current value again, clear) a video verdict. "normal" rejects its intervals. */
  function setVideo(state, video, verdict) {
    const e = entry(state, video.source);
    e.video = e.video === verdict ? null : verdict;
    if (e.video === "normal") video.intervals.forEach((iv) => { e.intervals[intervalKey(iv)] = "false_alarm"; });
  }

  /* Set (or clear) an interval verdict; confirming an anomaly overrides a "normal" video verdict. */
  function judgeInterval(state, video, iv, verdict) {
    const e = entry(state, video.source);
    const k = intervalKey(iv);
    if (e.intervals[k] === verdict) delete e.intervals[k];
    else e.intervals[k] = verdict;
    if (e.intervals[k] === "anomaly" && e.video === "normal") e.video = null;
  }

  function csvCell(text) {
    return /[",\r\n]/.test(text) || text.trim() !== text ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  /* The labels CSV `vadpipe train --labels` reads: "video,label" with the source file's stem.
   * unflaggedNormal: unreviewed videos without any interval count as normal (the detector's word). */
  function labelsCsv(state, videos, { unflaggedNormal = false } = {}) {
    const rows = new Map();
    const conflicts = [];
    let left = 0;
    for (const v of videos) {
      let label = videoLabel(state, v);
      if (label === null && unflaggedNormal && v.n_intervals === 0) label = "normal";
      if (label === null) { left += 1; continue; }
      if (rows.has(v.stem) && rows.get(v.stem) !== label) conflicts.push(v.stem);
      rows.set(v.stem, label);
    }
    conflicts.forEach((stem) => rows.delete(stem));
    const names = [...rows.keys()].sort();
    const text = "video,label\n" + names.map((n) => csvCell(n) + "," + rows.get(n) + "\n").join("");
    return { text, n: names.length, left, conflicts };
  }

  /* An XD-Violence annotations file (`<video> start end [start end ...]`, source frames, end exclusive)
   * of the confirmed intervals of every anomalous video. */
  function annotationsTxt(state, videos) {
    const lines = [];
    const missing = [];
    for (const v of videos) {
      if (videoLabel(state, v) !== "anomalous") continue;
      const spans = v.intervals.filter((iv) => intervalVerdict(state, v, iv) === "anomaly");
      if (!spans.length || /\s/.test(v.stem)) { missing.push(v.stem); continue; }
      lines.push(v.stem + " " + spans.map((iv) => iv.start_frame + " " + iv.end_frame).join(" "));
    }
    lines.sort();
    return { text: lines.map((l) => l + "\n").join(""), n: lines.length, missing };
  }

  function download(name, text, mime) {
    const url = URL.createObjectURL(new Blob([text], { type: mime || "text/plain" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function fmtTime(s) {
    const m = Math.floor(s / 60);
    const sec = s - 60 * m;
    return m + ":" + (sec < 10 ? "0" : "") + sec.toFixed(1);
  }

  function fmt(x, digits) { return x === null || x === undefined ? "–" : x.toFixed(digits === undefined ? 3 : digits); }

  return { data, load, save, entry, intervalKey, intervalVerdict, videoLabel, setVideo, judgeInterval,
    labelsCsv, annotationsTxt, download, el, fmtTime, fmt };
})();
