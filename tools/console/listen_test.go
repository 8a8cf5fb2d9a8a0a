package console

import (
	"errors"
	"strings"
	"testing"
)

// TestCheckLoopback: porthole-console without TLS and porthole-lab serve only
// where CheckLoopback allows, every interface included in what it refuses.
func TestCheckLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:8088", true},
		{"127.0.0.2:0", true},
		{"[::1]:0", true},
		{"localhost:0", true},
		{"0.0.0.0:8088", false},
		{":8088", false},
		{"[::]:0", false},
		{"192.0.2.1:8088", false},
	} {
		err := CheckLoopback(tc.addr)
		var nl *NotLoopbackError
		if tc.ok && err != nil || !tc.ok && !errors.As(err, &nl) {
			t.Errorf("CheckLoopback(%q) = %v; want loopback %v", tc.addr, err, tc.ok)
		}
	}
	// What net.Listen would refuse is refused here, first, naming the address.
	for _, addr := range []string{"nonsense", "127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:no-such-service", "[::1]"} {
		err := CheckLoopback(addr)
		var nl *NotLoopbackError
		if err == nil || errors.As(err, &nl) || !strings.HasPrefix(err.Error(), addr+": ") {
			t.Errorf("CheckLoopback(%q) = %v; want an error naming the address", addr, err)
		}
	}
}
