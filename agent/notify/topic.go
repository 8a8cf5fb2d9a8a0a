package notify

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxTopicBytes is the longest topic name MQTT can carry (a UTF-8 string with a
// 2-byte length, MQTT 5.0 §1.5.4).
const maxTopicBytes = 65535

// CheckTopicName reports why topic cannot be published to, or nil. Besides the
// wildcards and NUL (MQTT 5.0 §4.7.3, §1.5.4) it refuses what a broker may treat
// as a malformed packet and answer by closing the connection (§1.5.4: control
// characters U+0001–U+001F and U+007F–U+009F, Unicode non-characters; Mosquitto
// does): paho keeps an unacknowledged QoS 1 PUBLISH in the session and sends it
// again first thing on every reconnect, so one such publish would end every
// later connection as soon as it comes up.
func CheckTopicName(topic string) error {
	switch {
	case topic == "":
		return errors.New("is empty")
	case strings.ContainsAny(topic, "+#\x00"):
		return errors.New("must not contain wildcards (+ #) or NUL")
	case len(topic) > maxTopicBytes:
		return fmt.Errorf("is %d bytes long, over MQTT's %d", len(topic), maxTopicBytes)
	}
	return checkMQTTString(topic)
}

// checkMQTTString refuses what MQTT 5 (1.5.4) lets a broker refuse in a UTF-8
// string by closing the connection: invalid UTF-8, NUL and other control
// characters, and non-characters. Mosquitto does refuse them.
func checkMQTTString(s string) error {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			return fmt.Errorf("is not valid UTF-8 (at byte %d)", i)
		case r < 0x20 || 0x7F <= r && r <= 0x9F: // NUL among them
			return fmt.Errorf("has a control character (U+%04X) at byte %d", r, i)
		case 0xFDD0 <= r && r <= 0xFDEF || r&0xFFFE == 0xFFFE:
			return fmt.Errorf("has a Unicode non-character (U+%04X) at byte %d", r, i)
		}
	}
	return nil
}
