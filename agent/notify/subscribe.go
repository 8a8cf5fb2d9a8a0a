package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
)

// SubscribeError is a notify subscription the broker refused: a SUBACK
// reason code of 0x80 or more. At AWS IoT Core 0x87 (not authorized) means
// the IoT policy lacks iot:Subscribe on the topic filter.
type SubscribeError struct {
	_            [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Thing        string
	ClientID     string // the MQTT client id; empty or Thing: the same
	Topic        string
	Reason       byte   // the SUBACK reason code, ≥ 0x80
	ReasonString string // the broker's explanation, often empty
}

func (e *SubscribeError) Error() string {
	msg := "notify: subscription to " + e.Topic + " refused by the broker, reason " + reasonText(e.Reason)
	if e.ReasonString != "" {
		msg += ": " + e.ReasonString
	}
	if e.Reason == 0x87 {
		msg += "; " + subscribePolicyHint(e.Thing, e.ClientID, e.Topic)
	}
	return msg
}

// subscribe subscribes cli to the notify topic at QoS 1, retrying with
// backoff until the broker grants it or ctx (this connection) ends. It runs
// on every new connection, even when the broker kept the session: a broker
// that lost its state (restarted without persistence, session expired)
// would otherwise deliver nothing, silently.
func (l *Listener) subscribe(ctx context.Context, cli *paho.Client) {
	reported := false
	for attempt := 0; ; attempt++ {
		sa, err := cli.Subscribe(ctx, &paho.Subscribe{
			Subscriptions: []paho.SubscribeOptions{{Topic: l.topic, QoS: 1}},
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil && sa != nil && len(sa.Reasons) == 1 && sa.Reasons[0] < 0x80 {
			l.subscribed(ctx, sa.Reasons[0], attempt)
			return
		}
		err = l.subscribeError(sa, err)
		wait := l.backoff.delay(attempt + 1)
		if connectionGone(err) {
			// The connection is going; connectionDown ends ctx shortly. A
			// broker that drops the connection instead of refusing in the
			// SUBACK (AWS IoT Core does with MQTT 3.1.1) leaves only this.
			l.log.Warn("mqtt connection closed while subscribing; if this repeats, the subscription may be forbidden",
				"topic", l.topic, "error", err, "hint", subscribePolicyHint(l.cfg.ThingName, l.cfg.ClientID, l.topic))
		} else {
			// 0x91, packet identifier in use: each side numbers its own
			// packets (MQTT 5 §2.2.1), but a broker that checks a SUBSCRIBE's
			// id against its own messages in flight (mochi-mqtt, the lab's
			// broker, with notifications queued while the device was off)
			// refuses it until they are acknowledged: a clash, not a refusal.
			se, _ := err.(*SubscribeError)
			clash := se != nil && se.Reason == 0x91 && attempt < 3
			level, msg := slog.LevelError, "notify subscription failed; no notification can arrive until it succeeds"
			if clash {
				level, msg = slog.LevelInfo, "notify subscription to be sent again: the broker had its packet identifier in use"
			}
			l.log.Log(ctx, level, msg, "topic", l.topic, "error", err, "attempt", attempt+1, "retry_in", wait)
			if l.cfg.OnSubscribeError != nil && !reported && !clash {
				reported = true
				l.cfg.OnSubscribeError(err)
			}
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// connectionGone reports whether a failed Subscribe failed because its
// connection did (lost, closed, reset: a broker that dropped the older of two
// clients with one id), not because the broker refused it or did not answer.
func connectionGone(err error) bool {
	var ne net.Error
	return errors.Is(err, session.ErrNoConnection) || errors.Is(err, paho.ErrConnectionLost) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.As(err, &ne) && !ne.Timeout()
}

// subscribeError turns a failed Subscribe into a *SubscribeError when the
// broker answered with a refusal.
func (l *Listener) subscribeError(sa *paho.Suback, err error) error {
	if sa != nil && len(sa.Reasons) > 0 && sa.Reasons[0] >= 0x80 {
		se := &SubscribeError{Thing: l.cfg.ThingName, ClientID: l.cfg.ClientID, Topic: l.topic, Reason: sa.Reasons[0]}
		if sa.Properties != nil {
			se.ReasonString = sa.Properties.ReasonString
		}
		return se
	}
	if err == nil {
		return fmt.Errorf("notify: subscribing to %s: unexpected SUBACK %v", l.topic, sa)
	}
	return wrapErr("notify: subscribing to "+l.topic, err)
}

// subscribed marks the listener ready, unless the connection ended
// meanwhile.
func (l *Listener) subscribed(ctx context.Context, qos byte, attempt int) {
	l.mu.Lock()
	if ctx.Err() == nil && !l.isReady {
		close(l.ready)
		l.isReady = true
	}
	l.mu.Unlock()
	l.log.Info("notify subscription granted", "topic", l.topic, "qos", qos, "attempts", attempt+1)
	if qos == 0 {
		l.log.Warn("broker granted QoS 0 only: notifications sent while the device is offline will be lost", "topic", l.topic)
	}
}
