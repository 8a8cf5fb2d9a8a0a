// porthole console: the page's own code. No framework, no inline scripts (CSP
// script-src 'self'); xterm.js and its fit add-on are loaded before this file.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  let state = { tunnels: [], keys: [] };
  let loginTunnel = null;
  let paneSeq = 0;
  const acceptFor = new Map(); // thing → changed host key fingerprint the operator trusts, for the next login

  // ---- pages and tabs ----
  function showPage(id) {
    document.querySelectorAll(".page").forEach((p) => p.classList.toggle("active", p.id === "page-" + id));
    document.querySelectorAll("#tabs .tab").forEach((t) => t.classList.toggle("active", t.dataset.page === id));
    const pane = panes.get(id);
    if (pane) requestAnimationFrame(() => pane.fit());
  }
  $("#tab-tunnels").addEventListener("click", () => showPage("tunnels"));

  function notice(text, isError) {
    const n = $("#notice");
    n.textContent = text;
    n.hidden = !text;
    n.classList.toggle("error", !!isError);
  }

  // ---- access token ----
  // The printed URL carries the console's access token in its fragment
  // (#token=…), which the browser never sends to a server. The page keeps it in
  // sessionStorage (this origin, this tab: no other port of 127.0.0.1 can read it,
  // as it could a cookie), takes it out of the address bar, and sends it as a
  // bearer token on API calls and as the first message of each terminal.
  const tokenKey = "porthole-console-token";
  const token = (function () {
    const fromURL = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromURL) {
      sessionStorage.setItem(tokenKey, fromURL);
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(tokenKey) || "";
  })();

  // ---- API ----
  async function api(method, path, body) {
    const opts = { method, headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(path, opts);
    let data = {};
    try { data = await resp.json(); } catch (e) { /* not JSON */ }
    if (resp.status === 401) {
      throw new Error("this page has no access token, or one of an earlier run: open the address the console printed (…/#token=…)");
    }
    if (!resp.ok) throw new Error(data.error || resp.status + " " + resp.statusText);
    return data;
  }

  // The table as last drawn: it is drawn again only when it changed, so that
  // a focused button, a selected tunnel id or a click survive the refresh.
  let drawn = "";

  async function refresh() {
    try {
      state = await api("GET", "/api/state");
    } catch (e) {
      notice(e instanceof TypeError ? "The console does not answer: " + e.message : e.message, true);
      return;
    }
    const now = JSON.stringify(state.tunnels);
    if (now !== drawn) {
      drawn = now;
      renderTunnels();
    }
  }

  function renderTunnels() {
    const rows = $("#tunnel-rows");
    rows.textContent = "";
    if (state.tunnels.length === 0) {
      const tr = rows.insertRow();
      tr.className = "empty";
      const td = tr.insertCell();
      td.colSpan = 6;
      td.textContent = "No tunnels yet.";
      return;
    }
    for (const t of state.tunnels) {
      const tr = rows.insertRow();
      tr.dataset.id = t.id;
      tr.dataset.thing = t.thing;
      tr.insertCell().textContent = t.thing;
      tr.insertCell().textContent = t.tunnelId || "(pasted token)";
      const st = tr.insertCell();
      st.className = "state state-" + t.state;
      st.textContent = t.state + (t.reason ? ": " + t.reason : "");
      tr.insertCell().textContent = t.services.join(", ");
      tr.insertCell().textContent = t.tokenFingerprint;
      const act = tr.insertCell();
      if (t.state !== "closed") {
        const term = document.createElement("button");
        term.type = "button";
        term.className = "terminal";
        term.textContent = "Terminal";
        term.addEventListener("click", () => showLogin(t));
        act.append(term);
        const close = document.createElement("button");
        close.type = "button";
        close.className = "close";
        close.textContent = t.opened ? "Close tunnel" : "Disconnect";
        close.addEventListener("click", () => closeTunnel(t));
        act.append(" ", close);
      } else {
        const forget = document.createElement("button");
        forget.type = "button";
        forget.className = "forget";
        forget.textContent = "Remove";
        forget.addEventListener("click", async () => {
          try { await api("DELETE", "/api/tunnels/" + encodeURIComponent(t.id) + "?forget=1"); } catch (e) { notice(e.message, true); }
          refresh();
        });
        act.append(forget);
      }
    }
  }

  async function closeTunnel(t) {
    const path = "/api/tunnels/" + encodeURIComponent(t.id);
    try {
      await api("DELETE", path);
      notice(t.opened ? "Tunnel to " + t.thing + " closed." : "Disconnected from " + t.thing + ".");
    } catch (e) {
      notice(e.message, true);
      // The service could not be told (unreachable?): offer to let go here only.
      if (t.opened && confirm(e.message + "\n\nDisconnect this console from the tunnel anyway? " +
          "It stays open at the service until its lifetime ends; the console tries to close it again when it stops.")) {
        try {
          await api("DELETE", path + "?local=1");
          notice("Disconnected from " + t.thing + "; the tunnel is still open at the service.");
        } catch (e2) {
          notice(e2.message, true);
        }
      }
    }
    refresh();
  }

  // ---- page 1 forms ----
  $("#open-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const services = $("#open-services").value.split(/[\s,]+/).filter(Boolean);
    try {
      const t = await api("POST", "/api/tunnels", {
        mode: "open", thing: $("#open-thing").value.trim(), services,
        lifetimeMinutes: parseInt($("#open-lifetime").value, 10) || 0,
      });
      notice("Tunnel " + t.tunnelId + " to " + t.thing + " opened; waiting for the device to connect.");
    } catch (e) {
      notice(e.message, true);
    }
    refresh();
  });

  $("#token-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const tok = $("#token-value");
    try {
      const t = await api("POST", "/api/tunnels", {
        mode: "token", token: tok.value, label: $("#token-label").value.trim(),
        region: $("#token-region").value.trim(), endpoint: $("#token-endpoint").value.trim(),
      });
      notice("Connecting to " + t.thing + " with token " + t.tokenFingerprint + ".");
    } catch (e) {
      notice(e.message, true);
    }
    tok.value = ""; // the page keeps no token
    refresh();
  });

  // ---- login ----
  function showLogin(t) {
    loginTunnel = t;
    $("#login-thing").textContent = t.thing;
    const f = $("#login-form");
    f.hidden = false;
    $("#login-user").focus();
  }
  $("#login-cancel").addEventListener("click", () => { $("#login-form").hidden = true; });
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!loginTunnel) return;
    const auth = document.querySelector("input[name=auth]:checked").value;
    const login = {
      tunnel: loginTunnel.id, user: $("#login-user").value.trim(), auth,
      key: $("#login-key").value, pem: "", passphrase: "", password: "",
    };
    if (auth === "pem") { login.pem = $("#login-pem").value; login.passphrase = $("#login-passphrase").value; }
    if (auth === "password") login.password = $("#login-password").value;
    $("#login-password").value = "";
    $("#login-pem").value = "";
    $("#login-passphrase").value = "";
    $("#login-form").hidden = true;
    openPane(loginTunnel.thing, login, acceptFor.get(loginTunnel.thing));
    acceptFor.delete(loginTunnel.thing);
  });

  // ---- terminals ----
  const panes = new Map();

  function openPane(thing, login, acceptHostKey) {
    const id = "term-" + (++paneSeq);
    const el = $("#pane-template").content.firstElementChild.cloneNode(true);
    el.id = "page-" + id;
    el.dataset.thing = thing;
    $("main").append(el);

    const tab = document.createElement("button");
    tab.type = "button";
    tab.className = "tab";
    tab.dataset.page = id;
    tab.dataset.thing = thing;
    tab.textContent = (login.user || state.user) + "@" + thing;
    const x = document.createElement("span");
    x.className = "x";
    x.textContent = "×";
    x.title = "close this terminal";
    tab.append(x);
    tab.addEventListener("click", (ev) => {
      if (ev.target === x) { pane.close(); return; }
      showPage(id);
    });
    $("#tabs").append(tab);

    const term = new Terminal({ cursorBlink: true, fontSize: 14, lineHeight: 1.15, scrollback: 5000 });
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open($(".term", el));
    // A paste while the device's shell has bracketed paste on (readline does) must
    // stay between its markers: a clipboard that a web page wrote may carry
    // "ESC[201~", the end marker, and a command with a carriage return after it,
    // which the shell would run. xterm.js 6.0.0 passes the ESC through; like
    // xterm, VTE and Alacritty, the page shows it as ␛ instead. This listener
    // sees the paste before xterm.js's own (capture, on an element around it).
    $(".term", el).addEventListener("paste", (ev) => {
      const text = ev.clipboardData && ev.clipboardData.getData("text/plain");
      if (!text || !term.modes.bracketedPasteMode || !/[\x1b\x9b]/.test(text)) return; // xterm.js pastes it
      ev.preventDefault();
      ev.stopPropagation();
      term.paste(text.replace(/\x1b/g, "\u241b").replace(/\x9b/g, "\u241b"));
    }, true);
    const status = $(".status", el);
    const pasteNote = $(".paste", el);
    const pane = {
      el, tab, term,
      fit() { try { fit.fit(); } catch (e) { /* hidden */ } },
      close() {
        if (ws) ws.close();
        term.dispose();
        el.remove();
        tab.remove();
        panes.delete(id);
        showPage("tunnels");
      },
    };
    panes.set(id, pane);
    showPage(id);
    pane.fit();

    function setStatus(text, cls) {
      status.textContent = text;
      status.className = "status" + (cls ? " " + cls : "");
    }

    // Keystrokes go in step with the device (terminal.go): at most inputWindow
    // bytes of them that the console has not confirmed ("delivered") are on
    // their way, in pieces of up to 64 KiB (the console refuses a message over
    // 256 KiB). The rest of a large paste waits here, and the page says how much;
    // so the console always reads this page, and notices at once when it goes.
    const chunk = 64 << 10;
    const inputWindow = 1 << 20; // the console's maxHeld
    let queue = [], queued = 0, sent = 0, delivered = 0;
    const size = (n) => n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + " MiB" : Math.ceil(n / 1024) + " KiB";
    function pump() {
      while (queue.length && ws && ws.readyState === WebSocket.OPEN && sent - delivered + queue[0].length <= inputWindow) {
        const b = queue.shift();
        ws.send(b);
        sent += b.length;
        queued -= b.length;
      }
      pasteNote.hidden = queued === 0;
      pasteNote.className = "paste";
      if (queued) pasteNote.textContent = "sending the paste: " + size(queued) + " to go, as fast as " + thing + " reads it …";
    }
    // dropInput ends what is left of the input when the terminal ends, and says so.
    function dropInput() {
      if (queued && el.isConnected) { // not a terminal the operator closed
        pasteNote.textContent = size(queued) + " of the paste not sent: the terminal ended";
        pasteNote.className = "paste lost";
        pasteNote.hidden = false;
        term.write("\r\n\x1b[1m[" + pasteNote.textContent + "]\x1b[0m\r\n");
      }
      queue = []; queued = 0;
    }

    let ws = null;
    function connect(acceptHostKey) {
      const url = new URL("/api/terminal", location.href);
      url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      const sock = ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      sent = 0; delivered = 0;
      let ended = false;
      ws.addEventListener("open", () => {
        ws.send(JSON.stringify({ type: "auth", token }));
        ws.send(JSON.stringify(Object.assign({}, login, { cols: term.cols, rows: term.rows, acceptHostKey: acceptHostKey || "" })));
        // secrets leave the page's memory once sent
        login.password = ""; login.pem = ""; login.passphrase = "";
        setStatus("connecting …");
        pump(); // what was typed while the WebSocket opened
      });
      ws.addEventListener("message", (ev) => {
        if (typeof ev.data !== "string") {
          term.write(new Uint8Array(ev.data));
          return;
        }
        const m = JSON.parse(ev.data);
        if (m.type === "delivered") { delivered = m.bytes; pump(); }
        else if (m.type === "info") setStatus(m.text);
        else if (m.type === "ready") { tab.classList.remove("ended"); term.focus(); }
        else if (m.type === "hostkey-changed") {
          const w = $(".warning", el);
          $(".warning-text", w).textContent = "WARNING: the SSH host key of " + m.thing + " has changed. Stored: " +
            m.stored + ". Presented now: " + m.presented + ". Someone may be impersonating the device, or it was " +
            "reinstalled. Trust the new key only if you know why it changed.";
          w.hidden = false;
          requestAnimationFrame(() => pane.fit());
          $(".trust", w).onclick = () => { // replaces the handler of an earlier warning
            w.hidden = true;
            requestAnimationFrame(() => pane.fit());
            if (login.auth !== "key") {
              setStatus("the new key will be accepted at the next login to " + m.thing + ": log in again from the Tunnels page (passwords and pasted keys are not kept)", "end-exit");
              acceptFor.set(m.thing, m.presented);
              return;
            }
            connect(m.presented);
          };
        } else if (m.type === "end") {
          ended = true;
          setStatus(m.text, "end-" + m.kind);
          el.dataset.end = m.kind;
          tab.classList.add("ended");
          term.write("\r\n\x1b[1m[" + m.text + "]\x1b[0m\r\n");
          dropInput();
        }
      });
      ws.addEventListener("close", (ev) => {
        if (ws === sock) dropInput(); // not a new login's
        if (!ended) {
          setStatus(ev.code === 1009 ? "the console closed the terminal: a message from this page was too large (" + ev.reason + ")"
            : ev.reason || "the connection to the console was lost", "end-error");
          el.dataset.end = "error";
          tab.classList.add("ended");
        }
      });
    }
    term.onData((d) => {
      if (!ws || ws.readyState > WebSocket.OPEN) return; // the terminal has ended, and says so
      const b = new TextEncoder().encode(d);
      for (let i = 0; i < b.length; i += chunk) queue.push(b.subarray(i, i + chunk));
      queued += b.length;
      pump();
    });
    term.onResize(({ cols, rows }) => {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
    });
    connect(acceptHostKey || "");
  }

  window.addEventListener("resize", () => {
    for (const [id, pane] of panes) {
      if (pane.el.classList.contains("active")) pane.fit();
    }
  });

  // ---- start ----
  (async function start() {
    await refresh();
    $("#open-form").hidden = !state.controlPlane;
    $("#open-thing").value = state.thing || "";
    $("#token-region").value = state.region || "";
    $("#token-endpoint").value = state.endpoint || "";
    $("#login-user").value = state.user || "root";
    const sel = $("#login-key");
    for (const k of state.keys) {
      const o = document.createElement("option");
      o.textContent = k;
      o.value = k;
      sel.append(o);
    }
    (state.keys.length ? $("#auth-key") : $("#auth-password")).checked = true;
    if (!state.keys.length) sel.disabled = true;
    setInterval(refresh, 1500);
  })();
})();
