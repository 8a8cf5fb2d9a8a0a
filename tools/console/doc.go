// Package console is porthole's operator web console: a small web application,
// served on loopback, that opens a tunnel (through a control plane such as
// tools/tunneld, or from a pasted source access token) and gives the operator SSH
// terminals to devices in the browser, several at once in tabs.
//
// The browser talks only to this server: JSON calls for tunnels and one WebSocket
// per terminal (github.com/coder/websocket). The server is the tunnel's source side
// (agent/tunnel.Source, one per tunnel, carrying each SSH connection in process,
// with no local port) and runs the SSH client (golang.org/x/crypto/ssh) over it. A
// tunnel is "ready" once the device's agent has joined it, which the console asks
// the control plane (DescribeTunnel): the SERVICE_IDS its own side gets says nothing
// of the device, and with a pasted token it cannot tell. Device host keys are
// trusted on first use per thing (HostKeys, a file), and a changed key stops the
// login with a visible warning until the operator accepts the new fingerprint.
//
// Security: requests must name the console's own address in their Host header
// (the listen address, or localhost, 127.0.0.1 or [::1] with its port, or the
// Config.PublicURL of a reverse proxy in front of it), which stops DNS rebinding.
// Every API call and terminal needs the random access token the server prints in
// its URL's fragment (http://127.0.0.1:PORT/#token=T): the page keeps it in
// sessionStorage and sends it as a bearer token, and as the first message of each
// terminal WebSocket. The port is a free one, another each run, unless the
// operator chooses one: a browser takes every server that ever listened on
// 127.0.0.1:PORT for one origin, so a page served there before (a device's web
// page forwarded to that port) could have left a service worker or cached
// scripts that would run as the console and read the token. The page takes the
// token out of the address bar, but the browser's history keeps the URL it
// visited, token and all (and syncs it where the profile does): the token is
// good until the console stops, so stop it when done. There is no cookie: a browser would send it to every port of
// 127.0.0.1. WebSockets and state-changing calls must come from the console's own
// origin (scheme, host and port: https over TLS, or the PublicURL's), pages carry a
// CSP that allows scripts from this server only (no inline scripts), answers it
// serves over TLS itself by a host name (not localhost) carry
// Strict-Transport-Security for a year, and tokens,
// passwords and private keys are held in memory only and never logged.
//
// The browser files are web/static (ours) and web/vendor (xterm.js, copied from
// npm's node_modules by `make console-assets`; generated, not committed). It is
// host-side only (porthole-lab, porthole-console) and never linked into the device
// binary.
package console
