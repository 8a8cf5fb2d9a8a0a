package tunneld

import (
	"io"
	"log/slog"
	"regexp"
	"testing"
)

// TestTagKeysUnambiguousInLog: tag keys may hold spaces (AWS's pattern has
// \p{Z}), so the audit lines quote each: untagging the one key "Owner Team"
// and the two keys "Owner" and "Team" read differently.
func TestTagKeysUnambiguousInLog(t *testing.T) {
	logs := &syncBuffer{}
	ts := startServer(t, Config{Logger: slog.New(slog.NewTextHandler(io.MultiWriter(logs, tlogWriter{t}), nil))})
	m := ts.mustCall(t, "OpenTunnel", `{"destinationConfig":{"services":["SSH"]}}`)
	arn := m["tunnelArn"].(string)
	ts.mustCall(t, "TagResource", map[string]any{"resourceArn": arn, "tags": []Tag{{"Owner Team", "ops"}, {"Owner", "x"}, {"Team", "y"}}})
	ts.mustCall(t, "UntagResource", map[string]any{"resourceArn": arn, "tagKeys": []string{"Owner Team"}})
	ts.mustCall(t, "UntagResource", map[string]any{"resourceArn": arn, "tagKeys": []string{"Owner", "Team"}})
	keys := regexp.MustCompile(`msg="tunnel untagged" tunnel=\S+ (keys=(?:"(?:[^"\\]|\\.)*"|\S+))`).FindAllStringSubmatch(logs.String(), -1)
	if len(keys) != 2 {
		t.Fatalf("untag lines: %q", keys)
	}
	if keys[0][1] == keys[1][1] {
		t.Errorf("untagging [\"Owner Team\"] and [\"Owner\" \"Team\"] both log %s", keys[0][1])
	}
}
