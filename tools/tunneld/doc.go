// Package tunneld is a self-hosted AWS IoT Secure Tunneling service, close enough to
// the real one that the AWS CLI, the reference localproxy and porthole cannot tell the
// difference on one machine. It is the backbone of the lab and of the end-to-end
// tests, and is usable on its own by fleets on a private MQTT broker. The binary is
// porthole-tunneld (tools/tunneld/cmd/porthole-tunneld).
//
// One listener serves both planes:
//
//   - the control plane, AWS JSON 1.1 on POST / with X-Amz-Target
//     IoTSecuredTunneling.<Operation>: OpenTunnel, CloseTunnel, DescribeTunnel,
//     ListTunnels, RotateTunnelAccessToken, TagResource, UntagResource and
//     ListTagsForResource, with the request and response shapes of the AWS API
//     reference and its error bodies ({"__type", "message"}:
//     ResourceNotFoundException, InvalidRequestException, LimitExceededException,
//     SerializationException). Requests need a SigV4-shaped Authorization header
//     (Config.AllowUnsigned lifts that). With Config.Credentials (--credentials) the
//     signature is verified, with its credential scope: Config.Region and the signing
//     name IoTSecuredTunneling (InvalidSignatureException, UnrecognizedClientException);
//     without, it is not, so the AWS CLI works with dummy credentials and
//     --endpoint-url, but only by the server's address or localhost: a request
//     whose Host names anything else is refused (AccessDeniedException, 403), as
//     a web page that rebinds its DNS name to the server's address sends;
//   - the data plane, WebSocket on /tunnel, from agent/tunnel/dataplane: the real
//     service's handshake, token and relay rules, pongs, validation closes, and the
//     test knobs (re-chunking, bandwidth limit counting pings and pongs, dropping a
//     side, SESSION_RESET, 5xx answers), reached through Server.Dataplane and
//     Server.FailHandshakes. DescribeTunnel reports each side CONNECTED or
//     DISCONNECTED with the time it last changed.
//
// Control-plane bodies have a limit per operation, above its largest valid
// request as the AWS CLI sends it (every character outside ASCII escaped): 1 MiB
// for OpenTunnel and TagResource (200 tags of 128 and 256 letters outside the
// BMP, and OpenTunnel's description of 2048, are 0.95 MB), 512 KiB for
// UntagResource, 16 KiB for the others. A body over it is refused with
// SerializationException (400), unread if its Content-Length says so, and the
// connection is closed without reading the rest. A signature covers the body,
// so the body is read before the signature is verified, also for a client that
// only knows an access key ID: bodies over 64 KiB (only many tags make one)
// share 4 MiB among all requests, and one that finds it spent is refused at once
// with ThrottlingException (429), which the AWS CLI and SDKs retry.
//
// The server holds at most Config.MaxConnections connections at once
// (--max-connections, 1024 by default), control-plane clients' and data-plane
// WebSockets' together, since they share the listener: a WebSocket holds its
// place until it ends. Connections past the cap are not accepted and closed:
// one per listener is accepted and waits for a place, the others wait in the
// kernel's listen backlog, and they are served in turn as places free, so that a flood of connections cannot use up the process's
// descriptors (which would also keep the state file from being written, and
// a tunnel's first connection is refused when its use cannot be saved), and an
// agent that comes meanwhile is served late rather than refused. Reaching the
// cap is logged at Warn, at most once a minute. At start tunneld warns when the
// open-files limit (RLIMIT_NOFILE) leaves less than 64 descriptors beside the
// cap.
//
// Tunnel ARNs are arn:PARTITION:iot:REGION:ACCOUNT:tunnel/ID, with Config.Region
// (--region), its partition (aws-cn in cn-*, aws-us-gov in us-gov-*, aws-iso in
// us-iso-*, aws-iso-b in us-isob-*, ...; aws elsewhere) and Config.AccountID. The
// tagging operations take a tunnel's ARN as it was returned; any other, of
// another partition, region or account, is ResourceNotFoundException.
//
// RotateTunnelAccessToken revokes: a side connected with a rotated token gets a
// Close frame, status 1008 with CloseReasonTokenRotated (and is cut if the close
// takes more than 2 s), which ends porthole connect, the agent's old session and
// localproxy without a retry of the token; a reconnect with it anyway is refused
// with 400 BodyTokenRotated, also terminal. The other side, if it stays, gets
// SESSION_RESET. What AWS does here is undocumented (spec §4); tunneld takes the
// safe reading, since rotation is how an operator revokes a leaked token. porthole
// connect exits 1 (a token ended for good), quoting the service's words; the agent
// joins with the new destination token from the notification.
//
// A tunnel opened with destinationConfig.thingName, and a rotation with DESTINATION
// or ALL, publish {"clientAccessToken","clientMode":"destination","region","services"}
// to $aws/things/<thing>/tunnels/notify through the Config.Notifier (MQTTNotifier:
// autopaho, MQTT v5, QoS 1, mutual TLS, reconnecting). Publishing never blocks the
// API: one goroutine delivers pending notifications and retries with backoff, so a
// tunnel opened while the broker is down is notified when it is back, even across a
// restart.
//
// Tunnels expire after timeoutConfig.maxLifetimeTimeoutMinutes (1–720, default 720):
// both sides get a Close frame, as on CloseTunnel, within a second, and from the
// expiry on a handshake is refused and the API describes the tunnel CLOSED. An
// expired tunnel is closed at its expiry (its lastUpdatedAt), also when it
// expired while tunneld was down. Closed tunnels stay describable for three hours
// from their close, at most Config.MaxClosedTunnels of them (--max-closed-tunnels,
// 1000 by default; past it the ones closed first are forgotten). With
// Config.DataDir, the state (tunnels, tokens, client tokens, the hashes of
// rotated tokens, pending notifications) is written atomically to DataDir/tunnels.json, mode 0600, after
// every API change and at every first use of a token on the data plane, before
// its 101 (a single-use token must stay used across a restart; a handshake whose
// use cannot be written is refused with 503; reconnects and disconnects are not
// written), and restored by New; a restart cuts the WebSockets without a
// Close frame, so clients with client tokens reconnect. One server at a time owns a
// data directory (an exclusive flock, held until Shutdown or Close); a second one
// fails at start with ErrDataDirInUse. A data directory that another local
// user could change (writable by group or others, or belonging to someone other
// than root or tunneld's user, it or a directory above it that is not sticky,
// or reached through such a user's link) is refused at start, before anything
// is read, and checked again on what was made and locked (another user could
// make it in between in a sticky directory such as /tmp). The state file is
// rewritten whole at each change: its size is the tunnels' (100 open and 1000
// closed by default), mostly their tags and descriptions, which AWS's limits
// allow to be large (200 tags of up to 128 and 256 letters, 2048 for a
// description): about 0.3 MB a tunnel at the most, 340 MB at the default
// limits. Where callers are not trusted, require --credentials and lower
// --max-closed-tunnels.
//
// The binary stops on SIGINT or SIGTERM (saving the state; control-plane requests
// still in flight after 10 s are cut, with a warning, and the stop is still clean)
// and, on SIGHUP, loads
// --tls-cert and --tls-key again (Options.Reload), keeping the pair it serves if
// the new files do not load, or if their certificate is not valid now (expired
// or not yet valid: an error names its dates) while the one it serves is, so
// certificate renewal hooks need no restart. A certificate out of date is
// served with a warning at start, and on SIGHUP over one out of date too. The
// MQTT client certificate and key (--mqtt-cert, --mqtt-key) are read again at
// every connection to the broker, the last pair that loaded offered while they
// do not: a renewed pair is used from the next reconnect on. A
// log reader that goes away does not stop it (SIGPIPE is caught). Its exit codes are porthole's: 0 after a stop by signal, 1 on a usage or
// configuration error (IsConfigError: do not restart), 2 on a runtime failure.
// A data directory that others may change, that tunneld's user may not write,
// or whose state file does not parse is a configuration error; one that cannot
// be written for a reason that passes (a full disk or quota, a file over
// RLIMIT_FSIZE, a read-only or failing file system: ENOSPC, EDQUOT, EFBIG,
// EROFS, EIO) is a runtime failure, as another server holding it is.
//
// In-process use (tests, the lab):
//
//	srv, err := tunneld.New(tunneld.Config{Logger: log})
//	l, _ := net.Listen("tcp", "127.0.0.1:0")
//	go srv.Serve(l) // ws://ADDR/tunnel and http://ADDR/
//	defer srv.Shutdown(ctx)
//	out, err := srv.OpenTunnel(ctx, &tunneld.OpenTunnelInput{
//		DestinationConfig: &tunneld.DestinationConfig{ThingName: "dev1", Services: []string{"SSH"}},
//	})
//	// out.SourceAccessToken, out.DestinationAccessToken; srv.Dataplane(out.TunnelID).Rechunk(1)
//
// Every state-changing control-plane call (tunnel opened, tokens rotated, tunnel
// closed, tagged, untagged) and every refused request is logged at INFO with the
// caller: remote address and, for a signed request, its access key ID and whether
// the signature was verified (--credentials); an ID that is not one of
// --credentials' (any ID without them) as "unknown:" and 8 hex digits of its
// SHA-256, since a secret key sent in the ID's place must not reach the log.
// Every data-plane handshake is logged with its status, mode, token fingerprint,
// channel id and remote address, and a refused one with the reason answered.
// Refusals, which anyone who reaches the server can cause, are logged 20 at once
// and then 5 a second: the next refusal logged says how many were left out
// (suppressed_before), and values the client chose (operation, mode, member
// names) are cut to 128 bytes.
// Request members that are not in the API (names are case-sensitive, as in AWS
// JSON 1.1) are ignored, as AWS does, and logged by name. At start, tunneld warns
// when it runs without --credentials (on loopback too: every user of the machine
// reaches it there), with them beyond loopback without --tls-cert (the access
// tokens cross the network in clear text), when --mqtt-broker is an mqtt://
// URL beyond loopback (the destination tokens are published in clear text), and
// when the credentials file is readable by group or others.
//
// Access tokens never reach a log line: records carry their fingerprints
// (tunnel.Token.Fingerprint). The state file holds them in clear, readable only by
// its owner.
//
// It is host-side only and never linked into the device binary.
package tunneld
