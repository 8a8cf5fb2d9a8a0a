package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/porthole-iot/porthole/agent/internal/quiet"
)

// ErrConfig wraps errors that no reconnect can mend: the tunnel's services do not
// match the local configuration.
var ErrConfig = errors.New("tunnel: configuration does not match the tunnel")

// ErrListen wraps a failure to listen on a configured address (a port in use,
// say): the source stops, since retrying would not free the port.
var ErrListen = errors.New("tunnel: cannot listen")

// terminal reports whether err ends a Run rather than causing a reconnect: a 4xx
// handshake answer, a Close frame from the service, a configuration mismatch.
func terminal(err error) bool {
	var he *HandshakeError
	if errors.As(err, &he) {
		return !he.Temporary()
	}
	var stop *stopError
	return errors.Is(err, ErrClosedByService) || errors.Is(err, ErrConfig) || errors.Is(err, ErrListen) || errors.As(err, &stop)
}

// run connects as mode and calls serve for each connection until ctx ends or an
// error is terminal; other failures reconnect after a backoff (spec §3.8). The client
// token is fixed for the whole run so the service accepts the reconnects. It returns
// nil when ctx ends, and at once an error when cfg names no valid endpoint.
func run(ctx context.Context, cfg Config, mode Mode, serve func(context.Context, *Conn) error) error {
	if cfg.ClientToken.IsZero() {
		cfg.ClientToken = GenerateClientToken()
	}
	// Where to connect is checked once: an endpoint or a region (a
	// notification's) that does not make a URL fails every attempt alike.
	if _, err := tunnelURL(cfg.Endpoint, cfg.Region, mode, cfg.AllowInsecureWebSocket); err != nil {
		return err
	}
	log := cfg.logger()
	b := backoff{base: durationOr(cfg.RetryMin, time.Second), max: durationOr(cfg.RetryMax, 120*time.Second)}
	connected := false // ever, in this run
	attempt := 0
	var repeats quiet.Repeats // the causes of failed attempts logged since the last connection
	for {
		endpoint := cfg.Endpoint
		if endpoint == "" {
			endpoint = RegionEndpoint(cfg.Region)
		}
		// Said at info once: each retry has its line already, the warning
		// of the attempt before, with its delay.
		level := slog.LevelInfo
		if attempt > 0 {
			level = slog.LevelDebug
		}
		attempt++
		if cfg.Region != "" {
			log.Log(ctx, level, "connecting", "endpoint", endpoint, "region", cfg.Region)
		} else {
			log.Log(ctx, level, "connecting", "endpoint", endpoint)
		}
		conn, err := Dial(ctx, &cfg, mode)
		lost := err == nil // this attempt connected, and its connection ended
		if err == nil {
			connected = true
			repeats.Reset()
			cfg.state(true, nil)
			up := time.Now()
			err = serve(ctx, conn)
			conn.closeNow()
			// A connection that lasted is a fresh start; one the service
			// ended at once (a bad frame on each connection) backs off.
			if time.Since(up) >= stableConnection {
				b.reset()
			}
		}
		if ctx.Err() != nil {
			cfg.state(false, context.Canceled)
			return nil
		}
		cfg.state(false, err)
		if ctx.Err() != nil { // OnState may end the run
			return nil
		}
		if terminal(err) {
			// The error is the caller's to report (porthole connect prints it
			// with a remedy, the agent logs it with its tunnel): said here too,
			// an operator read it twice.
			if _, ok := err.(*stopError); !ok {
				log.Debug("tunnel ended", "error", err)
			}
			return err
		}
		d := b.next()
		attrs := []any{"error", err, "delay", d.Round(time.Millisecond)}
		if h := cfg.certHint(err); h != "" {
			attrs = append(attrs, "hint", h)
		}
		switch {
		case lost:
			log.Warn("tunnel connection lost, reconnecting", attrs...)
		default:
			// Not as a lost connection each time: the service is down or
			// unreachable (since the connection was lost). On a device the
			// same failure again is logged at debug level only until
			// quiet.Every has passed: the agent retries a tunnel every two
			// minutes for as long as the device is without its WAN. An
			// operator's porthole connect says each attempt.
			msg := "cannot connect to the tunnel, retrying"
			if connected {
				msg = "cannot reconnect to the tunnel, retrying"
			}
			level := slog.LevelWarn
			if mode == ModeDestination {
				level, attrs = repeats.Level(level, msg+"\n"+quiet.Cause(err), time.Now(), attrs)
			}
			log.Log(ctx, level, msg, attrs...)
		}
		if !sleepCtx(ctx, d) {
			return nil
		}
	}
}

func (c *Config) state(connected bool, err error) {
	if c.OnState != nil {
		c.OnState(connected, err)
	}
}

// stableConnection is how long a connection must have lasted for the next
// reconnect to start the backoff again (a variable for the tests).
var stableConnection = 30 * time.Second
