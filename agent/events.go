//go:build linux

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/porthole-iot/porthole/agent/notify"
	"github.com/porthole-iot/porthole/sshd"
)

// Event is one JSON record on the event topic: what happened to a tunnel, a stream,
// an SSH login or a notification, so the operator can learn why a login fails.
type Event struct {
	Time   time.Time `json:"time"`
	Thing  string    `json:"thing"`
	Type   string    `json:"type"`             // agent-started, tunnel-connected, tunnel-connect-failed, tunnel-disconnected, tunnel-ended, stream-*, service-unmapped, notification-rejected, notify-subscription-failed, ssh-*, *-suppressed
	Tunnel string    `json:"tunnel,omitempty"` // fingerprint of the access token, never the token
	Reason string    `json:"reason,omitempty"`

	Service  string   `json:"service,omitempty"`
	Services []string `json:"services,omitempty"`
	BytesIn  int64    `json:"bytes_in,omitempty"`
	BytesOut int64    `json:"bytes_out,omitempty"`
	// Duration is a stream's (stream-end), or how long connecting has failed
	// (tunnel-connect-failed), as time.Duration prints it ("1m30s").
	Duration string `json:"duration,omitempty"`
	// Attempts counts failed connection attempts: so far (tunnel-connect-failed),
	// or before the connection (tunnel-connected); or what *-suppressed events
	// did not publish one by one.
	Attempts int `json:"attempts,omitempty"`
	// Version is the agent's (agent-started).
	Version string `json:"version,omitempty"`
	// Dropped counts the events lost just before this one: dropped by a full
	// queue (the broker slow or away) or refused by the broker. A consumer
	// sees the gap.
	Dropped int `json:"dropped,omitempty"`

	SSH *sshd.Event `json:"ssh,omitempty"` // the sshd audit record, for ssh-* events
}

// eventQueue publishes events in order from one goroutine; when the broker is slow or
// away it holds at most eventQueueSize events and drops the oldest.
type eventQueue struct {
	publish func(ctx context.Context, payload []byte) error
	log     *slog.Logger
	retry   time.Duration // wait after a failed publish; zero means a second

	mu       sync.Mutex
	queue    []queuedEvent
	seq      uint64
	inFlight uint64 // seq of the head while drain publishes it; 0 when none
	dropped  int
	lost     int // events dropped or refused that no published event has counted yet (Event.Dropped)
	wake     chan struct{}

	// Used by the publishing goroutine only.
	refusedCount  int       // refused events not yet reported
	refusedLogged time.Time // when a refusal was last reported
	droppedCount  int       // dropped events not yet reported
	droppedLogged time.Time // when dropped events were last reported
}

type queuedEvent struct {
	seq uint64
	e   Event
}

const eventQueueSize = 256

func newEventQueue(publish func(context.Context, []byte) error, log *slog.Logger) *eventQueue {
	return &eventQueue{publish: publish, log: log, wake: make(chan struct{}, 1)}
}

// add queues e; it never blocks.
func (q *eventQueue) add(e Event) {
	if q == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	q.mu.Lock()
	if len(q.queue) >= eventQueueSize {
		i := q.victimLocked()
		// slices.Delete(q.queue, i, i+1) without its instantiation for
		// queuedEvent (0.5 KB of code on linux/mipsle): the freed element
		// is cleared all the same.
		n := copy(q.queue[i:], q.queue[i+1:])
		q.queue[i+n] = queuedEvent{}
		q.queue = q.queue[:i+n]
		q.dropped++
		q.lost++
	}
	q.seq++
	q.queue = append(q.queue, queuedEvent{q.seq, e})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// victimLocked is the event a full queue drops: the oldest stream-start,
// stream-end or stream-refused, which come one or two per stream (anyone
// holding the source token can open thousands), or allowed ssh-forward, one
// per connection an `ssh -L` carries (a web UI's), so that they cannot push out
// the logins, refusals and tunnel events of the audit trail; only without one
// the oldest event.
// Never the event being published: it stays at the head until the broker
// answers, and dropped, it was counted lost though delivered (or, refused,
// counted twice).
func (q *eventQueue) victimLocked() int {
	first := 0
	if len(q.queue) > 1 && q.queue[0].seq == q.inFlight {
		first = 1
	}
	for i := first; i < len(q.queue); i++ {
		e := &q.queue[i].e
		if t := e.Type; t == "stream-start" || t == "stream-end" || t == "stream-refused" || t == "ssh-forward" && e.SSH != nil && e.SSH.Allowed {
			return i
		}
	}
	return first
}

// run publishes until ctx ends.
func (q *eventQueue) run(ctx context.Context) {
	for {
		q.drain(ctx)
		select {
		case <-q.wake:
		case <-ctx.Done():
			return
		}
	}
}

// finish tries for up to flush to publish what run left, then says what was
// not. It runs once run has returned. A nil queue has nothing to finish.
func (q *eventQueue) finish(flush time.Duration) {
	if q == nil {
		return
	}
	fctx, cancel := context.WithTimeout(context.Background(), flush)
	q.drain(fctx)
	cancel()
	q.mu.Lock()
	unsent, dropped := len(q.queue), q.dropped+q.droppedCount
	q.mu.Unlock()
	if unsent+dropped > 0 {
		q.log.Warn("events not sent before stopping: the broker did not take them in time", "unsent", unsent, "dropped", dropped)
	}
	if q.refusedCount > 0 { // refused since the last report, which comes at most once a minute
		q.log.Warn("events refused by the broker before stopping, dropped", "refused", q.refusedCount)
		q.refusedCount = 0
	}
}

func (q *eventQueue) drain(ctx context.Context) {
	for ctx.Err() == nil {
		q.mu.Lock()
		q.droppedCount += q.dropped
		q.dropped = 0
		if len(q.queue) == 0 {
			q.mu.Unlock()
			q.reportDropped(true) // caught up: nothing more is dropped for now
			return
		}
		head := q.queue[0]
		q.inFlight = head.seq
		e := head.e
		e.Dropped = q.lost
		q.mu.Unlock()
		q.reportDropped(false)
		b, _ := json.Marshal(e)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := q.publish(pctx, b)
		cancel()
		if errors.Is(err, notify.ErrQueuedInSession) {
			// The MQTT session sends it again on the next connection: publishing
			// it again would deliver it twice, as a new message (a half-open
			// link made one SSH login several in the audit trail). If the session
			// loses it, the listener logs that.
			q.log.Debug("event left to the MQTT session, which sends it when the link is back", "type", e.Type, "error", err)
			q.pop(head.seq, e.Dropped)
			continue
		}
		if errors.Is(err, notify.ErrRefused) {
			// Retrying gets the same answer and would hold up every event behind it.
			q.refused(e, err)
			q.pop(head.seq, -1) // one more lost, for the next to count
			continue
		}
		if err != nil {
			q.log.Debug("publishing event failed, will retry", "type", e.Type, "error", err)
			q.mu.Lock()
			q.inFlight = 0 // while it waits, a full queue may drop it as any other
			q.mu.Unlock()
			retry := q.retry
			if retry == 0 {
				retry = time.Second
			}
			select { // the broker is away: wait a little before trying again
			case <-time.After(retry):
			case <-ctx.Done():
			}
			continue
		}
		q.pop(head.seq, e.Dropped)
	}
}

// pop removes the published event seq from the queue's head, in the same
// critical section that ends its protection from victimLocked; counted is how
// many lost events it counted (-1: it was lost itself).
func (q *eventQueue) pop(seq uint64, counted int) {
	q.mu.Lock()
	q.inFlight = 0
	q.lost -= counted
	if len(q.queue) > 0 && q.queue[0].seq == seq {
		q.queue = q.queue[1:]
	}
	q.mu.Unlock()
}

// refusedLogEvery is how often a broker that refuses every event is reported,
// and a queue that keeps dropping events.
const refusedLogEvery = time.Minute

// reportDropped reports the events a full queue dropped: the first at once,
// then at most one line a minute with the count since the last, and the rest
// once the queue has caught up (caughtUp). Logged at every retry of the head,
// they made a line a second for as long as the broker was away.
func (q *eventQueue) reportDropped(caughtUp bool) {
	if q.droppedCount == 0 {
		return
	}
	if now := time.Now(); caughtUp || q.droppedLogged.IsZero() || now.Sub(q.droppedLogged) >= refusedLogEvery {
		q.log.Warn("events dropped while the broker was unreachable or slow", "dropped", q.droppedCount)
		q.droppedLogged, q.droppedCount = now, 0
	}
}

// refused reports an event the broker refused: the first at once, then at most
// one line a minute with the count since the last.
func (q *eventQueue) refused(e Event, err error) {
	q.refusedCount++
	if now := time.Now(); q.refusedLogged.IsZero() || now.Sub(q.refusedLogged) >= refusedLogEvery {
		q.log.Warn("event refused by the broker, dropped", "type", e.Type, "refused", q.refusedCount, "error", err)
		q.refusedLogged, q.refusedCount = now, 0
	}
}
