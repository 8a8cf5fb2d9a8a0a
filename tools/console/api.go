package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
)

// stateView is GET /api/state: the defaults for the forms and the tunnels.
type stateView struct {
	ControlPlane bool         `json:"controlPlane"`
	Endpoint     string       `json:"endpoint"`
	Region       string       `json:"region"`
	Thing        string       `json:"thing"`
	User         string       `json:"user"`
	Keys         []string     `json:"keys"`
	Tunnels      []tunnelView `json:"tunnels"`
}

func (s *Server) handleState(w http.ResponseWriter, r *http.Request) {
	v := stateView{ControlPlane: s.cfg.ControlPlane != nil, Endpoint: s.cfg.Endpoint, Region: s.cfg.Region,
		Thing: s.cfg.Thing, User: s.cfg.User, Keys: []string{}, Tunnels: s.tunnels.views()}
	for _, k := range s.cfg.Keys {
		v.Keys = append(v.Keys, k.Name)
	}
	writeJSON(w, http.StatusOK, v)
}

// openRequest is POST /api/tunnels: either open through the control plane (Thing,
// Services, LifetimeMinutes) or connect with a pasted source token (Token,
// Endpoint or Region, Label).
type openRequest struct {
	Mode            string   `json:"mode"` // "open" or "token"
	Thing           string   `json:"thing"`
	Services        []string `json:"services"`
	LifetimeMinutes int      `json:"lifetimeMinutes"`

	Token    string `json:"token"`
	Endpoint string `json:"endpoint"`
	Region   string `json:"region"`
	Label    string `json:"label"`
}

func (s *Server) handleOpen(w http.ResponseWriter, r *http.Request) {
	var req openRequest
	if err := readJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var spec tunnelSpec
	switch req.Mode {
	case "open":
		if s.cfg.ControlPlane == nil {
			writeError(w, http.StatusBadRequest, "this console has no control plane: paste a source token")
			return
		}
		thing := strings.TrimSpace(req.Thing)
		if thing == "" {
			writeError(w, http.StatusBadRequest, "a thing name is required")
			return
		}
		services := req.Services
		if len(services) == 0 {
			services = []string{"SSH"}
		}
		for _, sv := range services {
			if err := tunnel.ValidateServiceID(sv); err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("service %q: %v", sv, err))
				return
			}
		}
		// The service's range (OpenTunnel's TimeoutConfig.maxLifetimeTimeoutMinutes);
		// 0 is no "default" here: the page always sends the operator's choice.
		if req.LifetimeMinutes < 1 || req.LifetimeMinutes > 720 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("lifetime %d minutes: want 1 to 720", req.LifetimeMinutes))
			return
		}
		// Counted till the answer is written (the handler's end): a small one,
		// which net/http buffers, so a page that does not read it does not
		// hold the console's stop.
		done, ok := s.tunnels.beginOpen()
		if !ok {
			writeError(w, http.StatusServiceUnavailable, "the console is shutting down")
			return
		}
		defer done()
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		// The console's stop cuts the call short: what it may have opened
		// is then looked for by its tag and closed, as after any lost answer.
		stop := context.AfterFunc(s.tunnels.ctx, cancel)
		defer stop()
		attempt, since, lifetime := newAttempt(), time.Now(), time.Duration(req.LifetimeMinutes)*time.Minute
		id, tok, err := s.cfg.ControlPlane.OpenTunnel(ctx, thing, services, lifetime, attempt)
		if err != nil {
			s.log.Warn("opening a tunnel", "thing", thing, "attempt", attempt, "err", err)
			msg := "opening the tunnel: " + err.Error()
			switch {
			case id == "" && !errors.Is(err, ErrRefused) && !errors.Is(err, ErrNotSent):
				// The answer may have been lost after the service opened
				// it: found by its tag and closed, or it would keep its
				// device, and count against the service's limit, for its
				// lifetime.
				msg += ". " + s.closeAttempt(r.Context(), thing, attempt, since, lifetime)
			case id != "":
				// Open at the service with nothing here to use or close it:
				// closed now, or it would keep its device for its lifetime.
				if fate, cerr := s.closeStray(r.Context(), id, thing, lifetime); cerr != nil {
					s.log.Warn("closing the tunnel that could not be used: "+fate, "thing", thing, "tunnel_id", id, "err", cerr)
					msg += fmt.Sprintf(". The service opened it (%s), and closing it failed (%v): %s", id, cerr, fate)
				} else {
					s.log.Info("closed the tunnel that could not be used", "thing", thing, "tunnel_id", id)
					msg += fmt.Sprintf(". The service opened it (%s): it was closed", id)
				}
			}
			writeError(w, http.StatusBadGateway, msg)
			return
		}
		s.log.Info("tunnel opened", "thing", thing, "tunnel_id", id, "services", services, "token", tok)
		spec = tunnelSpec{TunnelID: id, Thing: thing, Endpoint: s.cfg.Endpoint, Region: s.cfg.Region, Token: tok, Opened: true}
	case "token":
		tok, err := tunnel.NewAccessToken(strings.TrimSpace(req.Token))
		if err != nil {
			writeError(w, http.StatusBadRequest, "the source token: "+err.Error())
			return
		}
		label := strings.TrimSpace(req.Label)
		if label == "" {
			writeError(w, http.StatusBadRequest, "a device name is required: the device's host key is remembered under it")
			return
		}
		spec = tunnelSpec{Thing: label, Endpoint: strings.TrimSpace(req.Endpoint), Region: strings.TrimSpace(req.Region), Token: tok}
		if spec.Endpoint == "" && spec.Region == "" {
			spec.Endpoint, spec.Region = s.cfg.Endpoint, s.cfg.Region
		}
		// The source side would retry a bad endpoint for ever.
		if err := s.checkEndpoint(spec.Endpoint, spec.Region); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.log.Info("source token pasted", "thing", label, "token", tok)
	default:
		writeError(w, http.StatusBadRequest, `mode must be "open" or "token"`)
		return
	}
	t := s.tunnels.start(spec)
	writeJSON(w, http.StatusOK, t.view())
}

// checkEndpoint refuses what the tunnel's source side cannot connect to, which it
// would retry for ever: a malformed endpoint or region, and a plain-text (ws://)
// endpoint unless Config.AllowInsecureWebSocket.
func (s *Server) checkEndpoint(endpoint, region string) error {
	err := tunnel.ValidateEndpoint(endpoint, region, s.cfg.AllowInsecureWebSocket)
	if errors.Is(err, tunnel.ErrPlainWebSocket) { // porthole-console has no option for it
		return fmt.Errorf("endpoint %q is plain text: the console connects to the data plane with TLS only (wss://)", endpoint)
	}
	return err
}

func (s *Server) handleClose(w http.ResponseWriter, r *http.Request) {
	t := s.tunnels.get(r.PathValue("id"))
	if t == nil {
		writeError(w, http.StatusNotFound, "no such tunnel")
		return
	}
	// local=1 disconnects this console only, when closing at the service failed
	// (the control plane unreachable): the tunnel stays among those closed at
	// shutdown.
	local := r.URL.Query().Get("local") == "1"
	if t.spec.Opened && s.cfg.ControlPlane != nil && t.view().State != stateClosed && !local {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		if err := s.cfg.ControlPlane.CloseTunnel(ctx, t.spec.TunnelID); err != nil {
			s.log.Warn("closing a tunnel", "tunnel_id", t.spec.TunnelID, "err", err)
			writeError(w, http.StatusBadGateway, "closing the tunnel: "+err.Error())
			return
		}
		s.tunnels.closedAtService(t)
		// The service's Close frame ends the source side; wait for it so that
		// terminals report the closed tunnel, then stop it anyway.
		if _, ok := t.closedReason(5 * time.Second); !ok {
			s.log.Warn("the service did not close the tunnel's source side", "tunnel_id", t.spec.TunnelID)
		}
	}
	if r.URL.Query().Get("forget") == "1" {
		s.tunnels.remove(t)
	} else {
		t.stop()
		<-t.done
	}
	writeJSON(w, http.StatusOK, t.view())
}

func readJSON(r *http.Request, v any) error {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return errors.New("want Content-Type application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("reading the request: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("reading the request: more after its JSON object")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
