// The node's web console: reads the control API of the node that serves it (same
// origin) and renders it. No framework, no build step, nothing from elsewhere.
//
// Escaping: market data is attacker-controlled (names, verifiers, any field a peer
// signs), so nothing is ever parsed as HTML: every element is made with
// createElement and every value set as textContent (`el` below); the page's CSP
// forbids inline scripts besides.
//
// Live updates: with the node's API token (given once in the URL fragment,
// `/console#token=...`, which browsers never send to a server; kept in this tab's
// sessionStorage) the console reads the event stream GET /v1/events through fetch,
// which can send the Authorization header that EventSource cannot, and refreshes
// what an event touches. Without the token it polls the public reads every 2 s.
// Peers, gossip and status have no events: they are polled either way.
"use strict";

const POLL_MS = 2000;
const SLOW_POLL_MS = 5000;
const RETRY_MS = 3000;
const MAX_EVENTS = 60;
const TOKEN_KEY = "p2p-market-console-token";

const view = { market: null, markets: [], known: [], now: 0, mode: "starting", streaming: false };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function short(hex) {
  const s = String(hex || "");
  return s.length > 12 ? s.slice(0, 8) + "…" : s;
}

function replace(id, ...children) {
  document.getElementById(id).replaceChildren(...children);
}

function table(headers, rows, emptyText) {
  if (!rows.length) return el("p", { class: "empty" }, emptyText);
  const head = el("tr", {}, headers.map(([h, cls]) => el("th", { class: cls || null }, h)));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, rows));
}

function token() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const given = hash.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

async function get(path) {
  const answer = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!answer.ok) {
    let why = answer.statusText;
    try { why = (await answer.json()).error || why; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${answer.status} ${why}`);
  }
  return answer.json();
}

function setLive(mode, text) {
  view.mode = mode;
  const live = document.getElementById("live");
  live.setAttribute("data-mode", mode);
  live.textContent = text;
}

// -- node and markets ----------------------------------------------------------------
async function refreshStatus() {
  const [status, stats] = await Promise.all([get("/v1/status"), get("/v1/stats")]);
  view.now = stats.now;
  const fact = (label, value) => el("span", {}, label + " ", el("b", {}, value));
  replace(
    "node",
    fact("peer", short(status.peer_id)),
    fact("key", short(status.public_key)),
    fact("peers", status.peers),
    fact("uptime", `${Math.round(status.uptime_s)} s`),
    fact("admitted", status.admitted ?? stats.admitted),
    fact("storage", status.storage),
  );
}

async function refreshMarkets() {
  view.markets = (await get("/v1/markets")).markets;
  try { view.known = (await get("/v1/markets/known")).markets; } catch (_) { view.known = []; }
  if (!view.market || !view.markets.some((m) => m.id === view.market)) {
    view.market = view.markets.length ? view.markets[0].id : null;
  }
  const followed = new Set(view.markets.map((m) => m.id));
  const all = [...view.markets, ...view.known.filter((m) => !followed.has(m.id))];
  const rows = all.map((m) => {
    const mine = followed.has(m.id);
    const row = el(
      "tr",
      { class: (mine ? "pick " : "") + (m.id === view.market ? "selected" : ""), "data-market": m.id },
      el("td", { title: m.name ?? "" }, m.name ?? ""),
      el("td", { class: "mono", title: m.id }, short(m.id)),
      el("td", {}, m.proof_system ?? ""),
      el("td", { class: "verifier", title: m.verifier ?? "" }, m.verifier ?? ""),
      el("td", {}, mine ? "followed" : "announced"),
    );
    if (mine) row.addEventListener("click", () => { view.market = m.id; refreshAll().catch(showError); });
    return row;
  });
  replace("markets", table([["name"], ["id"], ["proof system"], ["verifier"], [""]], rows, "no markets"));
  const chosen = view.markets.find((m) => m.id === view.market);
  document.getElementById("book-market").textContent = chosen ? `· ${chosen.name}` : "";
}

// -- order book depth ------------------------------------------------------------------
function depth(id, bids, key, unit) {
  const levels = new Map();
  for (const b of bids) levels.set(b[key], (levels.get(b[key]) || 0) + b.capacity);
  const sorted = [...levels.entries()].sort((a, b) => a[0] - b[0]);
  const total = sorted.reduce((n, [, c]) => n + c, 0);
  if (!sorted.length) { replace(id, el("p", { class: "empty" }, "no bids")); return; }
  let cum = 0;
  const rows = sorted.map(([level, capacity]) => {
    cum += capacity;
    const track = el(
      "div",
      { class: "track" },
      el("div", { class: "bar cum", style: null }),
      el("div", { class: "bar", style: null }),
    );
    track.children[0].style.width = `${(100 * cum) / total}%`;
    track.children[1].style.width = `${(100 * capacity) / total}%`;
    return el("div", { class: "row" }, el("span", { class: "num" }, `${level} ${unit}`), track,
      el("span", { class: "dim" }, `${capacity} / ${cum}`));
  });
  replace(id, ...rows);
}

async function refreshBook() {
  if (!view.market) return;
  const book = await get(`/v1/markets/${view.market}/book`);
  depth("depth-price", book.bids, "price", "");
  depth("depth-time", book.bids, "proof_time", "ms");
}

// -- asks and their timelines ----------------------------------------------------------
function stepText(s) {
  const d = s.detail || {};
  switch (s.step) {
    case "placed": return `placed ×${d.replicas}`;
    case "committed": return `committed ${short(s.who)} @${d.price}`;
    case "assigned": return `assigned ${short(s.who)} @${d.price}`;
    case "delivered": return `delivered ${short(s.who)}`;
    case "verified": return `verified ${short(s.who)} ${d.valid ? "valid" : "invalid"}`;
    case "receipted": return `receipted ${short(s.who)} ${d.outcome}`;
    case "reassigned": return `reassigned (${short(s.who)} failed)`;
    case "attested": return `attested invalid inputs ${short(s.who)}`;
    case "cancel": return "cancel";
    case "state": return `→ ${d.state}`;
    default: return s.step;
  }
}

function askRow(ask) {
  const t0 = ask.timestamp;
  const failed = (s) =>
    (s.step === "receipted" && s.detail.outcome !== "accepted") ||
    (s.step === "verified" && !s.detail.valid);
  const steps = ask.timeline.map((s) =>
    el("span", { class: `step step-${s.step}${failed(s) ? " step-failed" : ""}`, "data-step": s.step },
      stepText(s), el("span", { class: "when" }, `+${s.t - t0} ms`)));
  return el(
    "tr",
    { "data-ask": ask.id, "data-state": ask.state },
    el("td", { class: "mono" }, short(ask.id)),
    el("td", {}, el("span", { class: `state state-${ask.state}` }, ask.state)),
    el("td", { class: "num" }, ask.max_price),
    el("td", { class: "num" }, `${ask.max_proof_time} ms`),
    el("td", { class: "num" }, `${ask.accepted.length}/${ask.replicas}`),
    el("td", { class: "num" }, ask.paid),
    el("td", { class: "timeline-cell" }, el("div", { class: "timeline" }, steps)),
  );
}

async function refreshAsks() {
  if (!view.market) return;
  const { asks } = await get(`/v1/markets/${view.market}/asks?limit=30`);
  replace("asks", table(
    [["ask"], ["state"], ["max price", "num"], ["max proof time", "num"], ["proven", "num"],
      ["paid", "num"], ["timeline"]],
    asks.map(askRow), "no asks yet"));
}

// -- provers ---------------------------------------------------------------------------
async function refreshProvers() {
  if (!view.market) return;
  const { provers } = await get(`/v1/markets/${view.market}/provers`);
  const rows = provers.map((p) => {
    const ev = p.evidence;
    const against = [];
    if (ev.equivocations) against.push(`${ev.equivocations} equivocation(s)`);
    if (ev.invalid_proofs) against.push(`${ev.invalid_proofs} invalid proof(s)`);
    if (ev.penalised) against.push("penalised now");
    if (p.invalid) against.push(`${p.invalid} judged invalid`);
    if (p.timed_out) against.push(`${p.timed_out} timed out`);
    return el(
      "tr",
      { "data-prover": p.prover },
      el("td", { class: "mono" }, short(p.prover)),
      el("td", { class: "num" }, p.price ?? "—"),
      el("td", { class: "num" }, p.proof_time === null ? "—" : `${p.proof_time} ms`),
      el("td", { class: "num" }, `${p.load} / ${p.capacity ?? "—"}`),
      el("td", { class: "num" }, `${p.accepted} / ${p.assigned}`),
      el("td", { class: "num" }, p.earned),
      el("td", { class: against.length ? "bad" : "good" }, against.length ? against.join(", ") : "none"),
    );
  });
  replace("provers", table(
    [["prover"], ["price", "num"], ["proof time", "num"], ["load / capacity", "num"],
      ["accepted / won", "num"], ["earned", "num"], ["evidence against"]],
    rows, "no provers"));
}

// -- peers and gossip --------------------------------------------------------------------
async function refreshPeers() {
  const p = await get("/v1/peers");
  const g = p.gossip;
  const fact = (label, value, bad) => el("span", { class: bad ? "bad" : null }, label + " ", el("b", {}, value ?? 0));
  replace(
    "gossip",
    fact("frames accepted", g.frames_accepted),
    fact("ignored", g.frames_ignored),
    fact("rejected", g.frames_rejected, g.frames_rejected > 0),
    fact("delivered", g.envelopes_delivered),
    fact("published", g.envelopes_published),
    fact("dropped", g.deliveries_dropped, g.deliveries_dropped > 0),
    fact("banned peers", g.peers_banned, g.peers_banned > 0),
    fact("pings missed", p.liveness.missed, p.liveness.missed > 0),
    fact("event clients", p.event_clients),
  );
  const rows = p.peers.map((peer) => el(
    "tr",
    { "data-peer": peer.peer },
    el("td", { class: "mono" }, short(peer.peer)),
    el("td", { class: "mono addr", title: peer.addrs.join(" ") }, (peer.addrs[0] ?? "").split("/p2p/")[0]),
    el("td", { class: "num" }, peer.rtt_ms === null ? "—" : `${peer.rtt_ms} ms`),
    el("td", { class: peer.rejected_frames ? "num bad" : "num" }, peer.rejected_frames),
  ));
  replace("peers", table([["peer"], ["address"], ["rtt", "num"], ["rejected frames", "num"]], rows, "no peers"));
}

// -- refreshing ----------------------------------------------------------------------------
function showError(err) {
  setLive("down", `node unreachable: ${err.message}`);
}

async function refreshMarketViews() {
  await Promise.all([refreshBook(), refreshAsks(), refreshProvers()]);
}

async function refreshAll() {
  await refreshStatus();
  await refreshMarkets();
  await Promise.all([refreshMarketViews(), refreshPeers()]);
}

let pending = null;
function soon(what) {
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    what().catch(showError);
  }, 250);
}

function logEvent(kind, data) {
  const list = document.getElementById("events");
  const bits = Object.entries(data)
    .filter(([k]) => k !== "market")
    .map(([k, v]) => `${k}=${typeof v === "string" ? short(v) : JSON.stringify(v)}`);
  list.prepend(el("li", { "data-kind": kind }, el("b", {}, kind), " ", bits.join(" ")));
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

const ASK_KINDS = new Set(["ask_state", "attempt_settled", "assigned", "reorg", "deadline_passed",
  "proof_delivered", "slot_judged", "commit_to_ask", "equivocation", "submitted"]);

async function streamEvents(secret) {
  const answer = await fetch("/v1/events", {
    headers: { Authorization: `Bearer ${secret}`, Accept: "text/event-stream" },
    cache: "no-store",
  });
  if (answer.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    throw new Error("the token was refused (401): polling instead");
  }
  if (!answer.ok || !answer.body) throw new Error(`/v1/events: ${answer.status}`);
  const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (!data) continue;
      const parsed = JSON.parse(data);
      if (kind === "subscribed") {
        view.streaming = true;
        setLive("events", "live: event stream");
        soon(refreshAll);  // what happened before the stream was live
        continue;
      }
      logEvent(kind, parsed);
      if (ASK_KINDS.has(kind) && (!parsed.market || parsed.market === view.market)) soon(refreshMarketViews);
      if (kind === "peer_connected" || kind === "peer_dropped") soon(refreshPeers);
    }
  }
}

async function runEvents(secret) {
  for (;;) {
    try {
      view.streaming = false;
      await streamEvents(secret);
      view.streaming = false;
      setLive("polling", "event stream ended: reconnecting");
    } catch (err) {
      view.streaming = false;
      if (!sessionStorage.getItem(TOKEN_KEY)) {
        setLive("polling", "live: polling (token refused)");
        return false;
      }
      setLive("polling", `event stream lost (${err.message}): reconnecting`);
    }
    await new Promise((done) => setTimeout(done, RETRY_MS));
  }
}

function every(ms, what) {
  const tick = async () => {
    try {
      await what();
      if (view.mode === "down") {
        if (view.streaming) setLive("events", "live: event stream");
        else setLive("polling", `live: polling every ${POLL_MS / 1000} s`);
      }
    } catch (err) {
      showError(err);
    }
    setTimeout(tick, ms);
  };
  setTimeout(tick, ms);
}

async function main() {
  const secret = token();
  try { await refreshAll(); } catch (err) { showError(err); }
  // Status, peers and gossip have no events: polled either way.
  every(SLOW_POLL_MS, async () => { await refreshStatus(); await refreshPeers(); });
  if (secret) {
    every(SLOW_POLL_MS * 2, async () => { await refreshMarkets(); await refreshMarketViews(); });
    const streaming = await runEvents(secret);
    if (streaming !== false) return;
  }
  setLive("polling", `live: polling every ${POLL_MS / 1000} s`);
  every(POLL_MS, async () => { await refreshMarkets(); await refreshMarketViews(); });
}

document.addEventListener("DOMContentLoaded", main);
