package tunneld

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/agent/tunnel/dataplane"
)

// Notification is what AWS IoT publishes to a thing when a tunnel is opened for it or
// its destination token is rotated (spec §4).
type Notification struct {
	ThingName         string
	ClientAccessToken string // the destination access token: a secret
	Region            string
	Services          []string
}

// Topic is the reserved topic the notification goes to.
func (n Notification) Topic() string { return "$aws/things/" + n.ThingName + "/tunnels/notify" }

// Payload is the notification's JSON: clientAccessToken, clientMode "destination",
// region and services, exactly the four keys AWS sends.
func (n Notification) Payload() []byte {
	b, _ := json.Marshal(struct {
		ClientAccessToken string   `json:"clientAccessToken"`
		ClientMode        string   `json:"clientMode"`
		Region            string   `json:"region"`
		Services          []string `json:"services"`
	}{n.ClientAccessToken, "destination", n.Region, append([]string{}, n.Services...)})
	return b
}

// Notifier delivers notifications, for example over MQTT (MQTTNotifier). Notify
// returns once n is delivered (for MQTT at QoS 1: acknowledged) or fails; it should
// wait for a connection that is down, until ctx ends. The server calls it from one
// goroutine and retries failures until the notification is superseded.
type Notifier interface {
	Notify(ctx context.Context, n Notification) error
}

// notifyTimeout bounds one Notify call; the notifier then retries.
const notifyTimeout = 30 * time.Second

// maxRetry caps the back-off between failed attempts; the pause itself, jittered
// around it (notifier), is at most one and a half times that.
const maxRetry = 10 * time.Second

// notifier delivers pending notifications, oldest tunnel first, until the server
// stops. A tunnel opened while the broker is down stays pending (also across a
// restart) and is delivered when the broker is back.
func (s *Server) notifier() {
	defer s.wg.Done()
	retry := time.Duration(0)
	for {
		woken := false
		if retry > 0 {
			// Jittered between half and one and a half times the back-off,
			// which doubles up to maxRetry. A new notification (a tunnel
			// opened, a token rotated) does not wait for the back-off of one
			// that keeps failing, e.g. for a thing whose topic the broker
			// refuses.
			d := time.Duration(rand.Int64N(int64(retry))) + retry/2
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(d):
			case <-s.wake:
				woken = true
			}
		} else {
			select {
			case <-s.ctx.Done():
				return
			case <-s.wake:
			}
		}
		failed := s.deliverPending()
		switch {
		case !failed:
			retry = 0
		case woken:
			// The back-off goes on where it was.
		case retry == 0:
			retry = s.cfg.retry
		default:
			retry = min(2*retry, maxRetry)
		}
	}
}

// deliverPending tries each pending notification once and reports whether any failed.
func (s *Server) deliverPending() (failed bool) {
	type job struct {
		id string
		n  Notification
	}
	var jobs []job
	var created []time.Time
	s.mu.Lock()
	for _, r := range s.tunnels {
		if !r.NotifyPending || r.Status != StatusOpen {
			continue
		}
		if thingOf(r) == "" {
			r.NotifyPending = false
			continue
		}
		jobs = append(jobs, job{r.ID, Notification{
			ThingName:         thingOf(r),
			ClientAccessToken: r.dp.Side(dataplane.Destination).Token,
			Region:            s.cfg.Region,
			Services:          slices.Clone(servicesOf(r)),
		}})
		created = append(created, r.CreatedAt)
	}
	s.mu.Unlock()
	order := make([]int, len(jobs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if c := created[a].Compare(created[b]); c != 0 {
			return c
		}
		return strings.Compare(jobs[a].id, jobs[b].id)
	})
	for _, i := range order {
		j := jobs[i]
		if s.ctx.Err() != nil {
			return true
		}
		log := s.log.With("tunnel", j.id, "thing", j.n.ThingName, "destination_token", fingerprint(j.n.ClientAccessToken))
		if s.cfg.Notifier == nil {
			log.Warn("no notifier configured: the destination token is not published")
			s.clearPending(j.id, j.n.ClientAccessToken)
			continue
		}
		if !s.stillPending(j.id, j.n.ClientAccessToken) {
			continue // rotated or closed since the snapshot
		}
		ctx, cancel := context.WithTimeout(s.ctx, notifyTimeout)
		err := s.cfg.Notifier.Notify(ctx, j.n)
		cancel()
		if err != nil && s.ctx.Err() != nil {
			// Cut by the stop: not a failure to warn of at every stop.
			log.Info("stopping before the notification was delivered: it stays pending, and the next start publishes it", "topic", j.n.Topic())
			return true
		}
		if err != nil {
			log.Warn("notification not delivered; will retry", "topic", j.n.Topic(), "err", err)
			failed = true
			continue
		}
		log.Info("notification delivered", "topic", j.n.Topic())
		s.clearPending(j.id, j.n.ClientAccessToken)
		// Saved now, not after the round: the next notification may wait
		// notifyTimeout for its broker, and a crash meanwhile would publish
		// this token again at the next start.
		s.markDirty()
	}
	return failed
}

// stillPending reports whether token is still the open tunnel's pending
// destination token.
func (s *Server) stillPending(id, token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.tunnels[id]
	return r != nil && r.Status == StatusOpen && r.NotifyPending && r.dp.Side(dataplane.Destination).Token == token
}

// clearPending clears the pending flag if token is still the destination token (a
// rotation meanwhile leaves the newer one pending).
func (s *Server) clearPending(id, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.tunnels[id]; r != nil && r.Status == StatusOpen && r.dp.Side(dataplane.Destination).Token == token {
		r.NotifyPending = false
	}
}

// fingerprint labels a token for logs without revealing it.
func fingerprint(secret string) string {
	if secret == "" {
		return "none"
	}
	t, err := tunnel.NewAccessToken(secret)
	if err != nil {
		return "invalid"
	}
	return t.Fingerprint()
}

// String describes n without its token, so that a Notification never leaks one into
// a log line or an error.
func (n Notification) String() string {
	return fmt.Sprintf("notification{thing %s, region %s, services %q, token %s}", n.ThingName, n.Region, n.Services, fingerprint(n.ClientAccessToken))
}

// LogValue is String for slog.
func (n Notification) LogValue() slog.Value { return slog.StringValue(n.String()) }

// GoString is String for %#v.
func (n Notification) GoString() string { return n.String() }
