package console

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/porthole-iot/porthole/tools/tunneld"
)

// An OpenTunnel whose answer is lost after the service acted (the console's
// timeout, a proxy's error page, a connection cut while the answer was on its
// way) leaves a tunnel open that nobody here knows the id of: its device keeps
// a connection to it for its lifetime, and it counts against the service's
// limit of open tunnels. The console tags each OpenTunnel with a value of its
// own (attemptTagKey) and, after such a failure, looks for the thing's open
// tunnels that carry it (ListTunnels, DescribeTunnel: both AWS IoT Secure
// Tunneling's and tools/tunneld's) and closes those, and only those: a tunnel
// someone else opened for the thing meanwhile has no such tag.

// attemptTagKey is the key of the tag whose value is unique to one OpenTunnel.
const attemptTagKey = "porthole-console-attempt"

// attemptClockSkew is how far the service's clock (createdAt) may be from the
// console's when FindAttempt looks at the tunnels opened since an attempt.
const attemptClockSkew = 5 * time.Minute

// maxAttemptDescribes bounds the DescribeTunnel calls of one FindAttempt: one
// per open tunnel of the thing opened by a console since the attempt.
const maxAttemptDescribes = 50

// maxAttemptPages bounds the ListTunnels pages of one FindAttempt.
const maxAttemptPages = 10

// newAttempt returns a value for attemptTagKey: 128 random bits.
func newAttempt() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// findAttempt is FindAttempt over a control plane's ListTunnels and
// DescribeTunnel. ListTunnels lists the newest first (as AWS documents it):
// paging stops at the first page that reaches tunnels older than since.
func findAttempt(ctx context.Context, thing, attempt string, since time.Time,
	list func(context.Context, *tunneld.ListTunnelsInput) (*tunneld.ListTunnelsOutput, error),
	describe func(context.Context, string) (*tunneld.DescribeTunnelOutput, error)) ([]string, error) {
	oldest := since.Add(-attemptClockSkew)
	var ids []string
	described := 0
	next := ""
	for range maxAttemptPages {
		out, err := list(ctx, &tunneld.ListTunnelsInput{ThingName: thing, NextToken: next})
		if err != nil {
			return ids, err
		}
		older := false
		for _, ts := range out.TunnelSummaries {
			if ts.CreatedAt.Before(oldest) {
				older = true
				continue
			}
			if ts.Status != tunneld.StatusOpen || ts.Description != openDescription {
				continue
			}
			if described == maxAttemptDescribes {
				return ids, fmt.Errorf("more than %d tunnels of %s opened by a console meanwhile: looked at the newest only", maxAttemptDescribes, thing)
			}
			described++
			d, err := describe(ctx, ts.TunnelID)
			if isNotFound(err) {
				continue // deleted meanwhile
			}
			if err != nil {
				return ids, err
			}
			if t := d.Tunnel; t != nil && t.TunnelID == ts.TunnelID && t.Status == tunneld.StatusOpen && t.DestinationConfig != nil &&
				t.DestinationConfig.ThingName == thing && slices.Contains(t.Tags, tunneld.Tag{Key: attemptTagKey, Value: attempt}) {
				ids = append(ids, t.TunnelID)
			}
		}
		if older || out.NextToken == "" {
			return ids, nil
		}
		next = out.NextToken
	}
	return ids, fmt.Errorf("more than %d pages of tunnels of %s: looked at the newest only", maxAttemptPages, thing)
}

// refusedForGood reports whether err is the service's refusal that the same
// call would meet again: not one for the rate of calls (ThrottlingException,
// LimitExceededException), after which it may succeed.
func refusedForGood(err error) bool {
	var ae *APIError
	throttled := errors.As(err, &ae) && (ae.Type == tunneld.ErrTypeThrottling || ae.Type == tunneld.ErrTypeLimitExceeded)
	return errors.Is(err, ErrRefused) && !throttled
}

// isNotFound reports whether err is the control plane's ResourceNotFoundException.
func isNotFound(err error) bool {
	var ae *APIError
	return tunneld.IsNotFound(err) || errors.As(err, &ae) && ae.Type == tunneld.ErrTypeResourceNotFound
}

// closeAttempt finds the tunnels that a failed OpenTunnel of attempt at since,
// with lifetime, may have opened for thing, and closes them (CloseTunnel, not
// deleted). It looks again every orphanTimeout/5 while it finds none, for the
// service may still be acting on a request whose answer the console gave up
// on, and stops after Config.orphanTimeout in all. It returns a sentence for
// the operator.
func (s *Server) closeAttempt(ctx context.Context, thing, attempt string, since time.Time, lifetime time.Duration) string {
	log := s.log.With("thing", thing, "attempt", attempt)
	log.Info("looking for a tunnel the failed open left open at the service")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.orphanTimeout)
	defer cancel()
	var ids []string
	var err error
	for {
		ids, err = s.cfg.ControlPlane.FindAttempt(ctx, thing, attempt, since)
		if len(ids) > 0 || ctx.Err() != nil {
			break
		}
		if refusedForGood(err) {
			break // asking again would be refused again
		}
		if err != nil {
			log.Warn("looking for a tunnel the failed open left open", "err", err)
		}
		timer := time.NewTimer(s.cfg.orphanTimeout / 5)
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		timer.Stop()
		if ctx.Err() != nil {
			break
		}
	}
	if len(ids) == 0 {
		if err != nil {
			log.Warn("could not tell whether the failed open left a tunnel open", "err", err)
			return fmt.Sprintf("Could not tell whether the service opened the tunnel all the same (%v): if it did, it stays open "+
				"until its lifetime ends (its tag: %s=%s)", err, attemptTagKey, attempt)
		}
		log.Info("no tunnel left open by the failed open found", "within", s.cfg.orphanTimeout)
		return fmt.Sprintf("No tunnel of this attempt was found open at the service within %v; if the service opens it later, "+
			"it stays open until its lifetime ends (its tag: %s=%s)", s.cfg.orphanTimeout, attemptTagKey, attempt)
	}
	// Each tunnel found has its own outcome: with more than one (the service
	// acted on a request the console had given up on, and on its retry), each
	// is named with its own.
	var closed, failed []string
	for _, id := range ids {
		fate, err := s.closeStray(ctx, id, thing, lifetime) // its own time: finding it may have used up ctx's
		if err != nil {
			log.Warn("closing the tunnel the failed open left open: "+fate, "tunnel_id", id, "err", err)
			if len(ids) == 1 {
				return fmt.Sprintf("The service had opened the tunnel all the same (%s), and closing it failed (%v): %s", id, err, fate)
			}
			if isNotFound(err) {
				failed = append(failed, id+": "+fate)
			} else {
				failed = append(failed, fmt.Sprintf("closing %s failed (%v): %s", id, err, fate))
			}
			continue
		}
		log.Info("closed the tunnel the failed open left open", "tunnel_id", id)
		closed = append(closed, id)
	}
	if len(failed) == 0 {
		return fmt.Sprintf("The service had opened the tunnel all the same (%s): it was found by this attempt's tag and closed", strings.Join(closed, ", "))
	}
	msg := fmt.Sprintf("The service had opened %d tunnels all the same (found by this attempt's tag): ", len(ids))
	switch len(closed) {
	case 0:
	case 1:
		failed = append(failed, closed[0]+" was closed")
	default:
		failed = append(failed, strings.Join(closed, ", ")+" were closed")
	}
	return msg + strings.Join(failed, "; ")
}

// closeStray closes tunnel id, which this console opened at the service for
// thing, with lifetime, and has no source side for, now (closeNow) or, if that
// fails, later (tunnels.closeLater). After a failure it returns what becomes of
// the tunnel, for the operator and the log.
func (s *Server) closeStray(ctx context.Context, id, thing string, lifetime time.Duration) (string, error) {
	err := s.closeNow(ctx, id)
	switch {
	case err == nil:
		return "", nil
	case isNotFound(err):
		return "the service no longer has it", err
	// Refused for good (no iot:CloseTunnel, say), it would be refused again
	// later.
	case !refusedForGood(err) && s.tunnels.closeLater(id, thing, lifetime):
		return "this console tries again to close it " + every(s.cfg.strayRetry) + " and at its stop; till then it stays open at the service", err
	}
	return "it stays open at the service until its lifetime ends", err
}

// every says how often d is, for the operator: "every minute", "every 30s".
func every(d time.Duration) string {
	if d == time.Minute {
		return "every minute"
	}
	return "every " + d.String()
}

// closeNow closes tunnel id at the service (CloseTunnel, not deleted) within
// Config.closeTimeout of its own, whatever is left of ctx.
func (s *Server) closeNow(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.closeTimeout)
	defer cancel()
	return s.cfg.ControlPlane.CloseTunnel(ctx, id)
}
