package console

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// Tunnel states as the page shows them. The source side's SERVICE_IDS says
// nothing of the device: the service sends it to a side that connects whether or
// not the other side is there (spec §3.1); DescribeTunnel's
// destinationConnectionState does (§3.8).
const (
	stateConnecting = "connecting" // the source side is not connected yet
	stateWaiting    = "waiting"    // the source side is; the device's agent has not joined (DescribeTunnel)
	stateReady      = "ready"      // both sides are connected: terminals can log in
	stateConnected  = "connected"  // the source side is; whether the device is cannot be seen (no control plane for it)
	stateClosed     = "closed"     // Run ended; see reason
)

// Device states, from the control plane's DescribeTunnel.
const (
	deviceUnknown = iota // no control plane for the tunnel, or it did not answer
	deviceAway
	deviceJoined
)

// devicePollInterval is how often the console asks the control plane whether a
// tunnel's device is connected, while its own side is.
const devicePollInterval = 2 * time.Second

// tunnelSpec is what starting a source side needs. The token is a secret.
type tunnelSpec struct {
	TunnelID string // the service's id, when the console opened it
	Thing    string // thing name or the operator's label: the host-key store's key
	Endpoint string // data-plane host[:port] or URL; "" means from Region
	Region   string
	Token    tunnel.Token
	Opened   bool // opened through the control plane: closing it closes the tunnel
}

// liveTunnel is one source side run by the console.
type liveTunnel struct {
	id   string // the console's id, used in URLs
	spec tunnelSpec
	done chan struct{} // closed when Run has returned

	mu        sync.Mutex
	state     string
	reason    string            // why it closed, why it waits, for people
	addrs     map[string]string // the tunnel's services (values unused)
	sourceUp  bool              // the source side is connected and has the services
	device    int               // deviceUnknown, deviceAway or deviceJoined
	deviceErr string            // why the device's state is unknown, with a control plane
	changed   chan struct{}     // closed and replaced on every change
	src       *tunnel.Source    // carries each terminal's SSH connection, no local port

	stop context.CancelFunc // ends Run
}

// tunnelView is a tunnel as the page sees it: no tokens.
type tunnelView struct {
	ID       string   `json:"id"`
	TunnelID string   `json:"tunnelId,omitempty"`
	Thing    string   `json:"thing"`
	Endpoint string   `json:"endpoint"`
	Token    string   `json:"tokenFingerprint"`
	Opened   bool     `json:"opened"`
	State    string   `json:"state"`
	Reason   string   `json:"reason,omitempty"`
	Services []string `json:"services"`
}

func (t *liveTunnel) view() tunnelView {
	t.mu.Lock()
	defer t.mu.Unlock()
	v := tunnelView{ID: t.id, TunnelID: t.spec.TunnelID, Thing: t.spec.Thing, Endpoint: t.spec.Endpoint,
		Token: t.spec.Token.Fingerprint(), Opened: t.spec.Opened, State: t.state, Reason: t.reason, Services: []string{}}
	if v.Endpoint == "" {
		v.Endpoint = tunnel.RegionEndpoint(t.spec.Region)
	}
	for s := range t.addrs {
		v.Services = append(v.Services, s)
	}
	sort.Strings(v.Services)
	return v
}

func (t *liveTunnel) setLocked(state, reason string) {
	if state == t.state && reason == t.reason {
		return
	}
	t.state, t.reason = state, reason
	close(t.changed)
	t.changed = make(chan struct{})
}

// watched reports whether the console can ask the control plane about t's device:
// it opened the tunnel, so it knows its id.
func (t *liveTunnel) watched(cfg *Config) bool {
	return t.spec.TunnelID != "" && cfg.ControlPlane != nil
}

// updateLocked sets the state from the source side's and the device's, once the
// source side is connected.
func (t *liveTunnel) updateLocked() {
	switch {
	case t.state == stateClosed || !t.sourceUp:
	case t.device == deviceJoined:
		t.setLocked(stateReady, "")
	case t.device == deviceAway:
		t.setLocked(stateWaiting, "the device's agent has not joined the tunnel yet")
	case t.deviceErr != "":
		t.setLocked(stateConnected, "cannot tell whether the device is connected: "+t.deviceErr)
	default:
		t.setLocked(stateConnected, "a source token alone does not show whether the device is connected: a login tells")
	}
}

// addr waits until the tunnel is ready and returns the service's name; it fails at
// once on a closed tunnel, and for an unknown service once the tunnel is ready. An
// empty service means SSH, or the tunnel's only service.
func (t *liveTunnel) addr(ctx context.Context, service string) (string, string, error) {
	for {
		t.mu.Lock()
		state, reason, ch := t.state, t.reason, t.changed
		name := service
		if name == "" {
			if _, ok := t.addrs["SSH"]; ok || len(t.addrs) != 1 {
				name = "SSH"
			} else {
				for s := range t.addrs {
					name = s
				}
			}
		}
		a, ok := t.addrs[name]
		// The source side has the tunnel's services (SERVICE_IDS) once it has
		// connected, whether or not the device has joined.
		var known []string
		for s := range t.addrs {
			known = append(known, s)
		}
		t.mu.Unlock()
		sort.Strings(known)
		switch {
		case state == stateClosed:
			return "", "", &tunnelClosedError{reason}
		case ok:
			return name, a, nil
		case state == stateReady || len(known) > 0:
			return "", "", fmt.Errorf("the tunnel has no service %q (its services: %s)", name, strings.Join(known, ", "))
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return "", "", fmt.Errorf("the tunnel's source side is not connected yet (%w)", ctx.Err())
		}
	}
}

// closedReason returns the reason once the tunnel is closed, waiting up to d.
func (t *liveTunnel) closedReason(d time.Duration) (string, bool) {
	select {
	case <-t.done:
	case <-time.After(d):
		return "", false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reason, true
}

type tunnelClosedError struct{ reason string }

func (e *tunnelClosedError) Error() string { return "the tunnel is closed: " + e.reason }

// tunnels runs the source sides. Source.Run's goroutines end with ctx.
type tunnels struct {
	cfg    *Config
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// opening counts the opens through the control plane under way
	// (beginOpen); close waits for them before it closes what is open.
	opening sync.WaitGroup

	mu     sync.Mutex
	closed bool
	byID   map[string]*liveTunnel
	list   []*liveTunnel // in order of start
	// open are the tunnels this console opened through the control plane and that
	// are not known to be closed at the service (a DELETE closed them, or the
	// service sent its Close frame), by console id; close closes them. Forgetting a
	// tunnel does not take it out: it may still be open.
	open map[string]*liveTunnel
	// stray are tunnels this console opened at the service and has no source
	// side for (an OpenTunnel answer it could not use, or one lost and found by
	// its tag) whose CloseTunnel failed, by tunnel id: retryStray tries them
	// again while it runs (retrying), and close at the end.
	stray    map[string]strayTunnel
	retrying bool
}

// strayTunnel is a stray tunnel's thing, and when its lifetime ends at the
// latest: it is no use closing it after that. failed is the error of the last
// retry's close that was logged (failedAlike), if logged says one was, and
// unlogged how many failed alike since.
type strayTunnel struct {
	thing    string
	until    time.Time
	failed   string
	logged   bool
	unlogged int
}

// strayRelog is how many retries of a stray tunnel's close that fail alike
// go unlogged between two of their lines: with the default Config.strayRetry,
// an hour's.
const strayRelog = 59

// strayFailedLine is the log line of a failed retry (strayFailed says which).
const strayFailedLine = "closing a tunnel again failed; trying again (this line again when the error changes, or every 60th try)"

func newTunnels(cfg *Config, log *slog.Logger) *tunnels {
	ctx, cancel := context.WithCancel(context.Background())
	return &tunnels{cfg: cfg, log: log, ctx: ctx, cancel: cancel, byID: map[string]*liveTunnel{},
		open: map[string]*liveTunnel{}, stray: map[string]strayTunnel{}}
}

// start runs the source side of spec until the tunnel closes or the console stops.
func (ts *tunnels) start(spec tunnelSpec) *liveTunnel {
	t := &liveTunnel{id: randomID(), spec: spec, done: make(chan struct{}), state: stateConnecting,
		addrs: map[string]string{}, changed: make(chan struct{})}
	if t.watched(ts.cfg) {
		t.device = deviceAway // till DescribeTunnel says otherwise
	}
	log := ts.log.With("tunnel", t.id, "thing", spec.Thing) // Source adds the token's fingerprint
	src := &tunnel.Source{
		Config: tunnel.Config{Endpoint: spec.Endpoint, Region: spec.Region, AccessToken: spec.Token,
			CAFile: ts.cfg.CAFile, AllowInsecureWebSocket: ts.cfg.AllowInsecureWebSocket, Proxy: ts.cfg.Proxy, Logger: log,
			OnState: func(connected bool, err error) {
				t.mu.Lock()
				defer t.mu.Unlock()
				if t.state == stateClosed || connected {
					return // connected: ready for the services
				}
				t.sourceUp = false
				if t.watched(ts.cfg) {
					t.device, t.deviceErr = deviceAway, "" // till DescribeTunnel says otherwise
				}
				reason := ""
				if err != nil {
					reason = "retrying: " + err.Error()
				}
				t.setLocked(stateConnecting, reason)
			}},
		// No listener: terminals dial through the engine, so no loopback port is
		// open to other local users.
		DialOnly: true,
		OnServices: func(services []string) {
			t.mu.Lock()
			defer t.mu.Unlock()
			for _, s := range services {
				t.addrs[s] = ""
			}
			t.sourceUp = true
			t.updateLocked()
		},
	}
	t.src = src
	ctx, cancel := context.WithCancel(ts.ctx)
	t.stop = cancel
	ts.mu.Lock()
	// Opened at the service: close closes it there, even when it is closing
	// now; it waits for the opens under way (beginOpen) before it takes the
	// open ones.
	if spec.Opened {
		ts.open[t.id] = t
	}
	if ts.closed {
		ts.mu.Unlock()
		cancel()
		t.setLocked(stateClosed, "the console is shutting down")
		close(t.done)
		return t
	}
	ts.byID[t.id] = t
	ts.list = append(ts.list, t)
	ts.wg.Add(1)
	ts.mu.Unlock()
	var watcher sync.WaitGroup
	if t.watched(ts.cfg) {
		watcher.Add(1)
		go func() {
			defer watcher.Done()
			ts.watchDevice(ctx, t, log)
		}()
	}
	go func() {
		defer ts.wg.Done()
		defer close(t.done)
		defer watcher.Wait()
		defer cancel()
		err := src.Run(ctx)
		if errors.Is(err, tunnel.ErrClosedByService) {
			ts.closedAtService(t)
		}
		reason := closeReason(err, ctx.Err() != nil)
		log.Info("tunnel source side ended", "reason", reason)
		t.mu.Lock()
		t.setLocked(stateClosed, reason)
		t.mu.Unlock()
	}()
	return t
}

// watchDevice asks the control plane whether t's device is connected, at once
// and then every devicePollInterval while t's source side is connected, until
// ctx ends.
func (ts *tunnels) watchDevice(ctx context.Context, t *liveTunnel, log *slog.Logger) {
	for {
		t.mu.Lock()
		up, changed := t.sourceUp, t.changed
		t.mu.Unlock()
		if !up {
			select {
			case <-ctx.Done():
				return
			case <-changed: // perhaps the source side connected
			}
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		joined, err := ts.cfg.ControlPlane.DestinationConnected(cctx, t.spec.TunnelID)
		cancel()
		if ctx.Err() != nil {
			return
		}
		device, why := deviceAway, ""
		switch {
		case err != nil:
			device, why = deviceUnknown, err.Error()
		case joined:
			device = deviceJoined
		}
		t.mu.Lock()
		if t.sourceUp { // else it was reset meanwhile; ask again once it is back
			if device != t.device || why != t.deviceErr {
				switch device {
				case deviceJoined:
					log.Info("the device joined the tunnel")
				case deviceAway:
					log.Info("the device is not connected to the tunnel")
				default:
					log.Warn("cannot tell whether the device is connected", "err", err)
				}
			}
			t.device, t.deviceErr = device, why
			t.updateLocked()
		}
		t.mu.Unlock()
		timer := time.NewTimer(devicePollInterval)
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		timer.Stop()
	}
}

// closeReason says why Source.Run returned, for people.
func closeReason(err error, stopped bool) string {
	var he *tunnel.HandshakeError
	switch {
	case errors.Is(err, tunnel.ErrClosedByService):
		return "the tunnel was closed by the service (closed by an administrator, its lifetime ended, or its access token was rotated)"
	case errors.As(err, &he):
		// The service answers alike for a mistyped token, one another client has
		// used, and one of a closed tunnel.
		return fmt.Sprintf("the service refused the access token (HTTP %d: %s): it is mistyped, already used by another client, or its tunnel is closed; tokens are single-use, ask for a rotated one", he.StatusCode, he.Body)
	case err != nil:
		return err.Error()
	case stopped:
		return "the tunnel was disconnected from this console"
	}
	return "the tunnel ended"
}

func (ts *tunnels) get(id string) *liveTunnel {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.byID[id]
}

func (ts *tunnels) views() []tunnelView {
	ts.mu.Lock()
	list := append([]*liveTunnel(nil), ts.list...)
	ts.mu.Unlock()
	out := make([]tunnelView, 0, len(list))
	for _, t := range list {
		out = append(out, t.view())
	}
	return out
}

// remove stops the source side of a tunnel and forgets it.
func (ts *tunnels) remove(t *liveTunnel) {
	t.stop()
	<-t.done
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.byID, t.id)
	for i, x := range ts.list {
		if x == t {
			ts.list = append(ts.list[:i], ts.list[i+1:]...)
			break
		}
	}
}

// beginOpen counts an open through the control plane under way, with its
// closing of a tunnel it opened and cannot use, till done is called: close
// waits for it. The caller's call to the control plane is to end with ts.ctx,
// which close ends first. Without the wait, Shutdown returned while the call
// waited for its answer, or while the search after a lost one went on, and
// porthole-console exited: what the service had opened stayed open, its
// device connected, for its lifetime. It reports false once close has begun:
// no open is to be made.
func (ts *tunnels) beginOpen() (done func(), ok bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closed {
		return nil, false
	}
	ts.opening.Add(1)
	return ts.opening.Done, true
}

// closedAtService notes that t's tunnel is closed at the service: close leaves it.
func (ts *tunnels) closedAtService(t *liveTunnel) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.open, t.id)
}

// closeLater adds tunnel id of thing, open at the service with no source side
// here and for at most lifetime from now, to the tunnels retryStray tries again
// to close there, every Config.strayRetry, and close closes at the end. It
// reports false once close has taken them: the caller's is then left open.
func (ts *tunnels) closeLater(id, thing string, lifetime time.Duration) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.stray == nil {
		return false
	}
	ts.stray[id] = strayTunnel{thing: thing, until: time.Now().Add(lifetime)}
	if !ts.retrying && !ts.closed && ts.cfg.ControlPlane != nil {
		ts.retrying = true
		ts.wg.Add(1)
		go ts.retryStray()
	}
	return true
}

// retryStray tries again, every Config.strayRetry, to close the stray tunnels,
// until none is left or the console stops. A tunnel leaves them when it is
// closed, when the service no longer has it, when the service refuses for
// good (refusedForGood: asked again it would refuse again), or when its
// lifetime has ended.
func (ts *tunnels) retryStray() {
	defer ts.wg.Done()
	tick := time.NewTicker(ts.cfg.strayRetry)
	defer tick.Stop()
	for {
		select {
		case <-ts.ctx.Done():
			return // close tries them once more
		case <-tick.C:
		}
		ts.mu.Lock()
		strays := maps.Clone(ts.stray)
		ts.mu.Unlock()
		for id, st := range strays {
			log := ts.log.With("thing", st.thing, "tunnel_id", id)
			if time.Now().After(st.until) {
				log.Info("a tunnel whose close failed has come to the end of its lifetime: no more tries")
				ts.forgetStray(id)
				continue
			}
			ctx, cancel := context.WithTimeout(ts.ctx, ts.cfg.closeTimeout)
			err := ts.cfg.ControlPlane.CloseTunnel(ctx, id)
			cancel()
			switch {
			case err != nil && ts.ctx.Err() != nil:
				// The console is stopping: close tries them once more. (A close
				// that succeeded as the stop began takes the tunnel out below:
				// the stop would close it again.)
				return
			case err == nil:
				log.Info("tunnel closed at the service after an earlier close failed")
			case isNotFound(err):
				log.Info("a tunnel whose close failed is no longer at the service")
			case refusedForGood(err):
				log.Warn("closing a tunnel again: refused; it stays open at the service until its lifetime ends", "err", err)
			default:
				if n, ok := ts.strayFailed(id, err); ok {
					log.Warn(strayFailedLine, "err", err, "retry_every", ts.cfg.strayRetry, "unlogged_since_last_line", n)
				}
				continue
			}
			ts.forgetStray(id)
		}
		ts.mu.Lock()
		if len(ts.stray) == 0 {
			ts.retrying = false
			ts.mu.Unlock()
			return
		}
		ts.mu.Unlock()
	}
}

// strayFailed notes that a retry to close stray tunnel id failed with err,
// and says whether to log it: when its error differs from the last one
// logged, or strayRelog retries failed alike since. n is how many retries
// failed unlogged since the last line, with that line's error, which may not
// be err's (a control plane that stays down is then a line an hour, not a
// minute, per tunnel).
func (ts *tunnels) strayFailed(id string, err error) (n int, logIt bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	st, ok := ts.stray[id]
	if !ok {
		return 0, false
	}
	if msg := failedAlike(err); !st.logged || msg != st.failed || st.unlogged >= strayRelog {
		n = st.unlogged
		st.failed, st.logged, st.unlogged, logIt = msg, true, 0, true
	} else {
		st.unlogged++
	}
	ts.stray[id] = st
	return n, logIt
}

// failedAlike is the text by which two failed retries are told alike: err's,
// with a network error's addresses taken out. A reset names the local port,
// new at every try, and a time-out the one of the service's addresses that
// was dialed: with them, a control plane down for one cause would fail
// differently at every try, and every try would be logged.
func failedAlike(err error) string {
	msg := err.Error()
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		msg = strings.Replace(msg, op.Error(), op.Op+" "+op.Net+": "+op.Err.Error(), 1)
	}
	return msg
}

// forgetStray takes tunnel id out of the stray tunnels.
func (ts *tunnels) forgetStray(id string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.stray, id)
}

// close stops every source side and waits for them; then it closes at the service
// (CloseTunnel, not deleted) the tunnels this console opened and has not closed,
// within ctx and Config.closeTimeout in all, so that they do not stay open, their
// destinations connected, for the rest of their lifetime. Tunnels of pasted tokens
// are the administrator's: they stay open.
func (ts *tunnels) close(ctx context.Context) {
	ts.mu.Lock()
	ts.closed = true
	ts.mu.Unlock()
	ts.cancel()
	ts.wg.Wait()
	// The opens under way end (ts.ctx) and close what they opened and cannot
	// use, or leave it to the stray ones below when that fails; one that
	// succeeded is among the open ones below (start).
	ts.opening.Wait()

	ts.mu.Lock()
	things := map[string]string{} // by tunnel id
	for id, st := range ts.stray {
		if time.Now().Before(st.until) {
			things[id] = st.thing
		}
	}
	for _, t := range ts.open {
		things[t.spec.TunnelID] = t.spec.Thing
	}
	ts.open, ts.stray = nil, nil // no open is under way any more (beginOpen)
	ts.mu.Unlock()
	if len(things) == 0 || ts.cfg.ControlPlane == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, ts.cfg.closeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for id, thing := range things {
		wg.Add(1)
		go func() {
			defer wg.Done()
			log := ts.log.With("thing", thing, "tunnel_id", id)
			if err := ts.cfg.ControlPlane.CloseTunnel(ctx, id); err != nil {
				log.Warn("closing a tunnel at shutdown", "err", err)
				return
			}
			log.Info("tunnel closed at shutdown")
		}()
	}
	wg.Wait()
}

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
