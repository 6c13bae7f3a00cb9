// rtc-mpu operator dashboard: polls /dashboard/api/tasks every POLL_MS and renders every active task.
// Values from the server are only ever set as text (textContent), never as HTML.
"use strict";
const POLL_MS = 2000;
const state = { csrf: "", sections: new Map(), previous: new Map(), hlsJs: typeof Hls !== "undefined" };

const el = (tag, attrs = {}, text = null) => {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
};
const say = (text) => { document.getElementById("message").textContent = text; };
const keyOf = (t) => `${t.app_id}/${t.task_id}`;
const kbps = (bps) => `${Math.round((bps || 0) / 1000)} kbit/s`;

async function act(task, action, body) {
  const url = `/dashboard/api/apps/${encodeURIComponent(task.app_id)}/tasks/${encodeURIComponent(task.task_id)}/${action}`;
  const answer = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-MPU-CSRF": state.csrf },
    body: JSON.stringify(body || {}),
  });
  const data = await answer.json().catch(() => ({}));
  say(answer.ok ? `${action} ${keyOf(task)}: ${data.state}` : `${action} ${keyOf(task)} refused: ${data.code} ${data.message}`);
  poll();
}

function makeSection(task) {
  const section = el("section", { class: "task", "data-task": keyOf(task) });
  const info = el("div", { class: "info" });
  const table = el("table", { class: "fields" });
  const cells = {};
  for (const [name, label] of [
    ["app", "app"], ["task", "task"], ["channel", "channel"], ["state", "state / status"],
    ["reason", "reason"], ["users", "users"], ["layout", "layout"], ["worker", "worker"], ["fps", "fps"],
    ["bitrate", "bitrate"], ["drops", "drops (video / audio)"], ["reconnects", "reconnects"],
    ["restarts", "restarts"],
  ]) {
    const row = el("tr");
    row.append(el("th", {}, label));
    cells[name] = el("td", { class: `f-${name}` });
    row.append(cells[name]);
    table.append(row);
  }
  info.append(table);
  info.append(el("div", {}, "outputs:"));
  const outputs = el("ul", { class: "outputs" });
  info.append(outputs);
  const controls = el("div", { class: "controls" });
  const stop = el("button", { class: "stop" }, "Stop");
  const layoutInput = el("input", { class: "layout", title: "LayoutIds, comma-separated" });
  const setLayout = el("button", { class: "set-layout" }, "Set layout");
  controls.append(stop, layoutInput, setLayout);
  info.append(controls);
  const links = el("div", { class: "links" });
  info.append(links);
  const media = el("div", { class: "media" });
  const thumb = el("div", { class: "thumb" });
  const player = el("div", { class: "player" });
  media.append(thumb, player);
  section.append(info, media);
  const entry = { section, cells, outputs, links, thumb, player, layoutInput, task, hls: null, img: null };
  stop.addEventListener("click", () => {
    if (confirm(`Stop task ${keyOf(entry.task)}?`)) act(entry.task, "stop");
  });
  setLayout.addEventListener("click", () => {
    const ids = layoutInput.value.split(",").map((s) => Number(s.trim())).filter((n) => Number.isInteger(n) && n > 0);
    act(entry.task, "layout", { layout_ids: ids });
  });
  layoutInput.value = (task.layout_ids || []).join(",");
  setupThumb(entry, task);
  setupPlayer(entry, task);
  return entry;
}

function setupThumb(entry, task) {
  entry.thumb.append(el("div", { class: "caption" }, "snapshot"));
  if (!task.snapshot_url) {
    entry.thumb.append(el("div", { class: "none" }, "no snapshot output"));
    return;
  }
  entry.img = el("img", { class: "snapshot", alt: `snapshot of ${keyOf(task)}` });
  entry.img.addEventListener("error", () => { entry.img.dataset.error = "1"; });
  entry.img.addEventListener("load", () => { entry.img.dataset.error = ""; entry.img.dataset.loads = String(Number(entry.img.dataset.loads || 0) + 1); });
  entry.thumb.append(entry.img);
}

function setupPlayer(entry, task) {
  entry.player.append(el("div", { class: "caption" }, "HLS"));
  if (!task.hls_url) {
    entry.player.append(el("div", { class: "none" }, "no hls output"));
    return;
  }
  const video = el("video", { class: "hls", muted: "", autoplay: "", playsinline: "", controls: "" });
  video.muted = true;
  entry.player.append(video);
  const start = () => {
    if (state.hlsJs && Hls.isSupported()) {
      const hls = new Hls({ liveDurationInfinity: true });
      entry.hls = hls;
      hls.on(Hls.Events.ERROR, (_event, data) => {
        if (!data.fatal) return;
        hls.destroy();
        entry.hls = null;
        setTimeout(() => { if (entry.section.isConnected) start(); }, 3000);
      });
      hls.loadSource(task.hls_url);
      hls.attachMedia(video);
      hls.on(Hls.Events.MANIFEST_PARSED, () => { video.play().catch(() => {}); });
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = task.hls_url;
      video.play().catch(() => {});
    } else {
      video.replaceWith(el("div", { class: "none" }, "hls.js is not installed (make dashboard-js)"));
    }
  };
  start();
}

function update(entry, task, now) {
  entry.task = task;
  const c = entry.cells;
  const stats = task.stats || {};
  c.app.textContent = task.app_id;
  c.task.textContent = task.task_id;
  c.channel.textContent = task.channel_id;
  c.state.textContent = `${task.state} / ${task.status} ${task.status_text}`;
  c.state.className = `f-state state-${task.state}`;
  c.reason.textContent = task.reason || "";
  c.users.textContent = (task.users || []).join(", ") || "(none)";
  c.layout.textContent = `${task.layout_id ?? "-"} of [${(task.layout_ids || []).join(", ")}]`;
  c.worker.textContent = task.worker || "-";
  const before = state.previous.get(keyOf(task));
  if (before && stats.video_frames !== undefined && task.updated_at > before.at) {
    c.fps.textContent = ((stats.video_frames - before.frames) / (task.updated_at - before.at)).toFixed(1);
  } else if (stats.video_frames === undefined) {
    c.fps.textContent = "-";
  }
  if (stats.video_frames !== undefined && (!before || task.updated_at > before.at)) {
    state.previous.set(keyOf(task), { frames: stats.video_frames, at: task.updated_at });
  }
  const main = (task.outputs || []).find((o) => o.kind === "rtmp");
  c.bitrate.textContent = main && main.stats ? kbps(main.stats.bitrate_bps) : "-";
  c.drops.textContent = `${stats.dropped_video_frames ?? 0} / ${stats.dropped_audio_blocks ?? 0}`;
  c.reconnects.textContent = String(stats.sink_reconnects ?? 0);
  c.restarts.textContent = String(task.restarts ?? 0);
  entry.outputs.replaceChildren(...(task.outputs || []).map((o) => {
    const s = o.stats || {};
    const where = o.url ? ` ${o.url}` : "";
    const rate = s.bitrate_bps !== undefined ? `, ${kbps(s.bitrate_bps)}` : "";
    const more = s.reconnects ? `, ${s.reconnects} reconnects` : "";
    return el("li", { class: `output output-${o.kind}` }, `${o.output_id} ${o.kind}${where}: ${o.state}${rate}${more}${o.error ? ` (${o.error})` : ""}`);
  }));
  const links = [];
  if (task.watch_url) links.push(el("a", { class: "watch", href: task.watch_url, target: "_blank", rel: "noopener" }, "WebRTC watch page"));
  else links.push(el("span", { class: "watch none" }, "no rtc output (WebRTC watch page)"));
  if (task.nginx_hls_url) links.push(document.createTextNode(" · "), el("a", { class: "hls-link", href: task.nginx_hls_url }, "HLS on nginx"));
  entry.links.replaceChildren(...links);
  if (entry.img) entry.img.src = `${task.snapshot_url}?t=${now}`;
}

async function poll() {
  let data;
  try {
    const answer = await fetch("/dashboard/api/tasks", { credentials: "same-origin", cache: "no-store" });
    if (!answer.ok) { say(`the dashboard's data: HTTP ${answer.status}`); return; }
    data = await answer.json();
  } catch (error) {
    say(`the dashboard's data: ${error}`);
    return;
  }
  state.csrf = data.csrf_token;
  document.getElementById("who").textContent = data.operator
    ? "operator key: every app"
    : `app key: ${(data.apps || []).join(", ")}`;
  document.getElementById("nodes-block").hidden = data.nodes === null;
  document.getElementById("queue").textContent = data.queue_length ?? "-";
  document.querySelector("#nodes tbody").replaceChildren(...(data.nodes || []).map((n) => {
    const row = el("tr");
    row.append(el("td", {}, n.node), el("td", {}, String(n.load)), el("td", {}, n.capacity === null ? "not reported" : n.capacity === 0 ? "unlimited" : String(n.capacity)), el("td", {}, n.tasks.join(", ")));
    return row;
  }));
  document.getElementById("count").textContent = String(data.tasks.length);
  const seen = new Set();
  const list = document.getElementById("tasks");
  for (const task of data.tasks) {
    const key = keyOf(task);
    seen.add(key);
    let entry = state.sections.get(key);
    if (!entry) {
      entry = makeSection(task);
      state.sections.set(key, entry);
      list.append(entry.section);
    }
    update(entry, task, data.generated_at);
  }
  for (const [key, entry] of state.sections) {
    if (seen.has(key)) continue;
    if (entry.hls) entry.hls.destroy();
    entry.section.remove();
    state.sections.delete(key);
    state.previous.delete(key);
  }
}

poll();
setInterval(poll, POLL_MS);
