// Package quiet keeps the line a retry loop logs at each failed attempt from
// filling a device's log. A router whose WAN is down retries its MQTT broker,
// and each tunnel it was given, every two minutes: one WARN each was about 720
// lines a day per connection, and OpenWrt's log ring holds 64 KiB, so within
// hours the lines from before the outage, the ones that say why, were gone.
//
// The first failure with a cause is logged; the same cause again is logged at
// debug level only, until Every has passed since it was last logged at its
// level: that line says how many were quieted in between. A new cause is
// logged at once, and a success (Reset) makes the next failure news again.
package quiet

import (
	"log/slog"
	"time"
)

// Every is how long the same cause stays quiet after it was logged.
const Every = 15 * time.Minute

// recent is how many causes a Repeats tells apart: two that alternate (an
// attempt over IPv6, then IPv4) stay quiet as well.
const recent = 4

// Repeats remembers the causes a retry loop logged last. The zero value is
// ready; it is not safe for concurrent use (each loop has its own).
type Repeats struct {
	_      [0]func() // not comparable: no equality function in the binary (docs/size.md)
	causes [recent]cause
	next   int // the slot the next new cause takes
}

type cause struct {
	_       [0]func()
	key     string
	at      time.Time // when it was last logged at its level
	quieted int       // times since then at debug level only
}

// Next says whether a failure with cause key, at now, is logged at its level
// (true) or at debug level only, and with how many failures were quieted
// since the cause was last logged (0 for the first). The key is what stays
// the same while the cause does: a message and its error (see Cause).
func (r *Repeats) Next(key string, now time.Time) (loud bool, quieted int) {
	for i := range r.causes {
		c := &r.causes[i]
		if c.key != key || c.at.IsZero() {
			continue
		}
		if d := now.Sub(c.at); d >= 0 && d < Every {
			c.quieted++
			return false, 0
		}
		quieted, c.at, c.quieted = c.quieted, now, 0
		return true, quieted
	}
	r.causes[r.next] = cause{key: key, at: now}
	r.next = (r.next + 1) % recent
	return true, 0
}

// Level is the level to log a failure with cause key at, at now: level when
// Next says it is logged, slog.LevelDebug when it is quieted. When failures
// were quieted since the cause was last logged, attrs gets "repeated" with
// their number.
func (r *Repeats) Level(level slog.Level, key string, now time.Time, attrs []any) (slog.Level, []any) {
	loud, quieted := r.Next(key, now)
	if !loud {
		return slog.LevelDebug, attrs
	}
	if quieted > 0 {
		attrs = append(attrs, "repeated", quieted)
	}
	return level, attrs
}

// Reset forgets the causes: the loop succeeded, and its next failure is news.
func (r *Repeats) Reset() { *r = Repeats{} }

// Cause is err's text as a key for Next, without what differs from one
// attempt to the next while the cause does not: each run of hexadecimal
// digits, dots and colons that holds a decimal digit and a dot or a colon, or
// is 4 or more long, becomes "#". That is an address and port ("dial tcp
// 192.0.2.7:8883", the first of a name's addresses, which DNS round robin
// changes at each attempt; the local port in "read tcp 192.0.2.7:41234->..."),
// a time ("current time 2026-12-04T02:00:38Z", each attempt of a device whose
// clock is in 1970) and an id ("channel-id 0a1b2c3d-...", which the service
// gives each refused attempt). A status ("HTTP 503", "refused CONNECT: 403")
// is kept: another one is another cause.
func Cause(err error) string {
	s := []byte(err.Error())
	out := s[:0] // written behind i: the result is never longer
	for i := 0; i < len(s); {
		j, digits, sep := i, false, false
		for ; j < len(s) && numeric(s[j]) && !endsClause(s, j); j++ {
			digits = digits || '0' <= s[j] && s[j] <= '9'
			sep = sep || s[j] == '.' || s[j] == ':'
		}
		switch {
		case digits && (sep || j-i >= 4):
			out = append(out, '#')
		case j == i:
			j++
			fallthrough
		default:
			out = append(out, s[i:j]...)
		}
		i = j
	}
	return string(out)
}

// endsClause reports whether s[j] is a colon that ends a clause ("HTTP 503:
// Service Unavailable"), not one within an address or a time.
func endsClause(s []byte, j int) bool {
	return s[j] == ':' && (j+1 == len(s) || s[j+1] == ' ')
}

// numeric reports whether c may be part of a number, an address or an id.
func numeric(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == '.' || c == ':'
}
