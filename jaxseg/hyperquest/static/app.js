// HyperQuest's page: every value from the server or the player goes into the page as text
// (textContent / option values), never as markup. The server enforces the rules.
"use strict";
const $ = (id) => document.getElementById(id);
const NAMES = {weight_decay: "weight decay", depth: "depth", dropout: "dropout", lr: "learning rate", width: "width"};
let gameId = null, state = null;

function text(tag, value) { const e = document.createElement(tag); e.textContent = value == null ? "" : String(value); return e; }
function row(cells, tag = "td") { const tr = document.createElement("tr"); cells.forEach((c) => tr.appendChild(text(tag, c))); return tr; }
function pct(x) { return x == null ? "-" : (100 * x).toFixed(1) + "%"; }
function showError(message) { const e = $("error"); e.textContent = message || ""; e.hidden = !message; }

async function api(method, path, body) {
  const init = {method, headers: {"Content-Type": "application/json"}};
  if (body !== undefined) init.body = JSON.stringify(body);
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({error: r.statusText}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

// A training request with the epoch's progress streamed (server-sent events).
async function train(path, body) {
  showError("");
  document.querySelectorAll("button").forEach((b) => (b.disabled = true));
  $("training").hidden = false; $("progress").value = 0;
  const events = new EventSource(`/api/games/${gameId}/progress`);
  events.onmessage = (m) => { const p = JSON.parse(m.data); if (p.training) $("progress").value = p.fraction; };
  try { render(await api("POST", path, body)); }
  catch (e) { showError(e.message); }
  finally {
    events.close(); $("training").hidden = true;
    document.querySelectorAll("button").forEach((b) => (b.disabled = false));
    if (state) render(state);
    loadBoard();
  }
}

function showDataset(d) {
  $("dataset").hidden = false;
  $("dataset-name").textContent = d.name;
  $("dataset-stats").textContent = `${d.num_classes} classes, ${d.image_shape.join(" x ")} images, ` +
    `${d.num_train} train / ${d.num_validation} validation; mean RGB ${d.mean_rgb.join(", ")}`;
  const body = $("class-table").tBodies[0]; body.replaceChildren();
  d.class_names.forEach((n, i) => body.appendChild(row([n, d.train_class_counts[i], d.validation_class_counts[i]])));
  $("examples").src = `/api/datasets/${encodeURIComponent(d.name)}/examples.png`;
}

function showStage1(choices) {
  const box = $("stage1-choices"); box.replaceChildren();
  for (const [name, options] of Object.entries(choices)) {
    const label = text("label", NAMES[name] + " "); const select = document.createElement("select");
    select.name = name; select.id = "choice-" + name;
    options.forEach((v) => { const o = text("option", v); o.value = String(v); select.appendChild(o); });
    label.appendChild(select); box.appendChild(label);
  }
  $("stage1").hidden = false;
}

function render(s) {
  state = s; gameId = s.id; location.hash = "game=" + s.id;
  $("join").hidden = true;
  if (!s.config) return;
  $("stage1").hidden = true; $("play").hidden = false;
  $("epoch").textContent = s.finished ? `${s.epoch} (finished)` : s.epoch;
  $("counters").textContent = `player ${s.player} - epochs trained ${s.epochs_trained}/${s.max_epochs}, ` +
    `actions ${s.actions_used}/${s.max_actions}, reverts in a row ${s.reverts_in_a_row}/${s.max_reverts_in_a_row}`;
  const moves = $("moves").tBodies[0]; moves.replaceChildren();
  for (const [name, next] of Object.entries(s.next_values)) {
    const tr = row([NAMES[name], s.config[name]]);
    for (const move of ["same", "up", "down"]) {
      const td = document.createElement("td"); const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio"; input.name = "move-" + name; input.value = move; input.checked = move === "same";
      input.disabled = next[move] === null || s.finished;
      label.appendChild(input); label.appendChild(document.createTextNode(" " + (next[move] === null ? "-" : next[move])));
      td.appendChild(label); tr.appendChild(td);
    }
    moves.appendChild(tr);
  }
  ["continue", "revert", "done"].forEach((id) => ($(id).disabled = s.finished));
  $("train-acc").textContent = pct(s.train_acc); $("val-acc").textContent = pct(s.val_acc);
  $("best-train").textContent = pct(s.best_train_acc); $("best-val").textContent = pct(s.best_val_acc);
  $("baseline").textContent = pct(s.baseline_val_acc);
  const hist = $("history").tBodies[0]; hist.replaceChildren();
  s.history.forEach((h) => hist.appendChild(row([h.epoch, h.action, h.config.width, h.config.depth, h.config.lr,
    h.config.dropout, h.config.weight_decay, pct(h.train_acc), pct(h.val_acc),
    h.val_acc_after_change == null ? "" : pct(h.val_acc_after_change)])));
  drawCurves(s);
}

function drawCurves(s) {
  const c = $("curves"), g = c.getContext("2d"), W = c.width, H = c.height, pad = 30;
  g.clearRect(0, 0, W, H);
  const trained = s.history.filter((h) => h.action === "start" || h.action === "continue");
  const n = Math.max(trained.length, s.baseline_val_accs.length, 2);
  const x = (i) => pad + (W - 2 * pad) * i / (n - 1), y = (v) => H - pad - (H - 2 * pad) * v;
  g.strokeStyle = "#ccc"; g.fillStyle = "#555"; g.font = "11px sans-serif";
  for (let v = 0; v <= 1.0001; v += 0.25) { g.beginPath(); g.moveTo(pad, y(v)); g.lineTo(W - pad, y(v)); g.stroke(); g.fillText((100 * v) + "%", 0, y(v) + 4); }
  const line = (values, colour, dash) => {
    g.strokeStyle = colour; g.setLineDash(dash); g.lineWidth = 2; g.beginPath();
    values.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v)))); g.stroke(); g.setLineDash([]);
  };
  line(s.baseline_val_accs, "#777", [2, 3]);
  line(trained.map((h) => h.train_acc), "#e65100", [6, 3]);
  line(trained.map((h) => h.val_acc), "#1565c0", []);
}

async function loadBoard() {
  try {
    const board = await api("GET", "/api/leaderboard");
    const body = $("leaderboard").tBodies[0]; body.replaceChildren();
    board.forEach((e, i) => body.appendChild(row([i + 1, e.player, e.kind, pct(e.best_val_acc), e.epochs, e.actions])));
  } catch (e) { showError(e.message); }
}

$("join-form").addEventListener("submit", async (ev) => {
  ev.preventDefault(); showError("");
  const background = {};
  if ($("education").value) background.education = $("education").value;
  if ($("years").value) background.years = Number($("years").value);
  if ($("experience").value) background.experience = Number($("experience").value);
  const kinds = [...document.querySelectorAll("input[name=kinds]:checked")].map((i) => i.value);
  if (kinds.length) background.kinds = kinds;
  const body = {player: $("player").value, background};
  if ($("seed").value) body.seed = Number($("seed").value);
  try {
    const game = await api("POST", "/api/games", body);
    gameId = game.id; location.hash = "game=" + game.id; $("join").hidden = true;
    showDataset(game.dataset); showStage1(game.choices);
  } catch (e) { showError(e.message); }
});

$("stage1-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const choices = {};
  document.querySelectorAll("#stage1-choices select").forEach((s) => (choices[s.name] = Number(s.value)));
  train(`/api/games/${gameId}/start`, choices);
});

$("continue").addEventListener("click", () => {
  const changes = {};
  document.querySelectorAll("#moves input:checked").forEach((i) => (changes[i.name.slice(5)] = i.value));
  train(`/api/games/${gameId}/actions`, {action: "continue", changes});
});
$("revert").addEventListener("click", () => train(`/api/games/${gameId}/actions`, {action: "revert"}));
$("done").addEventListener("click", () => train(`/api/games/${gameId}/actions`, {action: "done"}));

// Resume the game in the address (#game=ID) after a reload or a server restart.
(async () => {
  loadBoard();
  const m = location.hash.match(/game=([0-9a-z-]+)/);
  if (!m) return;
  try {
    const s = await api("GET", `/api/games/${m[1]}`);
    gameId = s.id; $("join").hidden = true;
    showDataset(await api("GET", `/api/datasets/${encodeURIComponent(s.dataset)}`));
    if (!s.config) showStage1(await api("GET", "/api/choices"));
    render(s);
  } catch (e) { showError(e.message); }
})();
