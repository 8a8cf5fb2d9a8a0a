package tunneld

// Tier 2: the AWS CLI v2 (Debian package awscli, /usr/bin/aws) drives the control
// plane unchanged, with --endpoint-url and dummy credentials, and the notifications
// arrive on a real Mosquitto (Debian package mosquitto) over mutual TLS, published by
// MQTTNotifier. `make test` installs both (tools/deps.sh).

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/agent/notify/mqtttest"
)

// awsCLI finds the AWS CLI v2: Debian's /usr/bin/aws first (a v1 from pip may come
// first on PATH), else any aws on PATH that says it is v2.
func awsCLI(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/aws", "aws"} {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		out, err := exec.Command(path, "--version").CombinedOutput()
		if err == nil && strings.HasPrefix(string(out), "aws-cli/2.") {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("the AWS CLI v2 is required (Debian package awscli, /usr/bin/aws; `make test` installs it)")
	}
	t.Skip("skipping: no AWS CLI v2 (apt-get install awscli, or run `make test`)")
	return ""
}

type cli struct {
	t        *testing.T
	path     string
	endpoint string
	env      []string
	region   string // "" means us-east-1
}

// run runs `aws iotsecuretunneling ARGS` and decodes its JSON output; want0 says
// whether the command must succeed. It returns the output and stderr.
func (c *cli) run(want0 bool, args ...string) (map[string]any, string) {
	c.t.Helper()
	region := c.region
	if region == "" {
		region = "us-east-1"
	}
	full := append([]string{"iotsecuretunneling"}, args...)
	full = append(full, "--endpoint-url", c.endpoint, "--region", region, "--output", "json", "--no-cli-pager")
	cmd := exec.Command(c.path, full...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if want0 != (err == nil) {
		c.t.Fatalf("aws %s: %v, stderr %q (want success: %v)", strings.Join(args, " "), err, stderr.String(), want0)
	}
	var m map[string]any
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
			c.t.Fatalf("aws %s: output %q: %v", strings.Join(args, " "), stdout.String(), err)
		}
	}
	return m, stderr.String()
}

func nextNotify(t *testing.T, msgs <-chan []byte) map[string]any {
	t.Helper()
	select {
	case b := <-msgs:
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("notification %q: %v", b, err)
		}
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no notification on the broker")
	}
	return nil
}

func TestAWSCLIWithMosquitto(t *testing.T) {
	t.Parallel() // mostly waiting for the CLI to start
	aws := awsCLI(t)
	broker := mqtttest.StartMosquitto(t)
	notifier := mosquittoNotifier(t, broker)
	// Signatures are verified: the CLI signs with the environment's credentials.
	ts := startServer(t, Config{Notifier: notifier, retry: 50 * time.Millisecond,
		Credentials: map[string]string{"AKIDPORTHOLETEST": "porthole-test-secret"}})
	dev1 := broker.Subscribe(t, "dev1", "$aws/things/dev1/tunnels/notify")
	// dev2 subscribes to dev1's topic: the ACL lets it subscribe, never receive.
	spy := broker.Subscribe(t, "dev2", "$aws/things/dev1/tunnels/notify")

	home := t.TempDir()
	c := &cli{t: t, path: aws, endpoint: "http://" + ts.addr, env: []string{
		"HOME=" + home, "PATH=" + os.Getenv("PATH"),
		"AWS_ACCESS_KEY_ID=AKIDPORTHOLETEST", "AWS_SECRET_ACCESS_KEY=porthole-test-secret",
		"AWS_CONFIG_FILE=" + home + "/none", "AWS_SHARED_CREDENTIALS_FILE=" + home + "/none",
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=",
	}}

	open, _ := c.run(true, "open-tunnel", "--destination-config", "thingName=dev1,services=SSH,WEB",
		"--timeout-config", "maxLifetimeTimeoutMinutes=60", "--description", "from the aws cli", "--tags", "key=team,value=lab")
	id, _ := open["tunnelId"].(string)
	dstToken, _ := open["destinationAccessToken"].(string)
	if id == "" || dstToken == "" || open["sourceAccessToken"] == nil || !strings.HasSuffix(open["tunnelArn"].(string), ":tunnel/"+id) {
		t.Fatalf("open-tunnel = %v", open)
	}
	n := nextNotify(t, dev1)
	if n["clientAccessToken"] != dstToken || n["clientMode"] != "destination" || n["region"] != "us-east-1" ||
		!slices.Equal(n["services"].([]any), []any{"SSH", "WEB"}) || len(n) != 4 {
		t.Errorf("notification = %v, want the destination token, destination, us-east-1, [SSH WEB]", redact(n))
	}

	d, _ := c.run(true, "describe-tunnel", "--tunnel-id", id)
	tun := d["tunnel"].(map[string]any)
	if tun["status"] != "OPEN" || tun["description"] != "from the aws cli" ||
		tun["sourceConnectionState"].(map[string]any)["status"] != "DISCONNECTED" ||
		tun["timeoutConfig"].(map[string]any)["maxLifetimeTimeoutMinutes"] != 60.0 {
		t.Errorf("describe-tunnel = %v", tun)
	}
	// The CLI turns epoch seconds into ISO 8601.
	if at, _ := tun["createdAt"].(string); !strings.HasPrefix(at, time.Now().UTC().Format("2006-01-02")) {
		t.Errorf("createdAt = %v, want today's date", tun["createdAt"])
	}

	c.run(true, "open-tunnel", "--destination-config", "thingName=dev2,services=SSH")
	l, _ := c.run(true, "list-tunnels", "--thing-name", "dev1")
	if s := l["tunnelSummaries"].([]any); len(s) != 1 || s[0].(map[string]any)["tunnelId"] != id {
		t.Errorf("list-tunnels --thing-name dev1 = %v", l)
	}
	// The service has no paginator in the CLI's model: pages are followed by hand.
	l, _ = c.run(true, "list-tunnels", "--max-results", "1")
	next, _ := l["nextToken"].(string)
	if len(l["tunnelSummaries"].([]any)) != 1 || next == "" {
		t.Fatalf("list-tunnels --max-results 1 = %v, want one tunnel and a nextToken", l)
	}
	if l, _ = c.run(true, "list-tunnels", "--max-results", "1", "--next-token", next); len(l["tunnelSummaries"].([]any)) != 1 ||
		l["tunnelSummaries"].([]any)[0].(map[string]any)["tunnelId"] != id || l["nextToken"] != nil {
		t.Errorf("second page = %v, want the first tunnel and no nextToken", l)
	}

	r, _ := c.run(true, "rotate-tunnel-access-token", "--tunnel-id", id, "--client-mode", "DESTINATION")
	if r["destinationAccessToken"] == nil || r["destinationAccessToken"] == dstToken || r["sourceAccessToken"] != nil {
		t.Errorf("rotate-tunnel-access-token = %v", redact(r))
	}
	if n := nextNotify(t, dev1); n["clientAccessToken"] != r["destinationAccessToken"] {
		t.Errorf("rotation notified %v, want the new destination token", redact(n))
	}
	c.run(true, "rotate-tunnel-access-token", "--tunnel-id", id, "--client-mode", "SOURCE")

	tags, _ := c.run(true, "list-tags-for-resource", "--resource-arn", open["tunnelArn"].(string))
	if len(tags["tags"].([]any)) != 1 {
		t.Errorf("list-tags-for-resource = %v", tags)
	}

	c.run(true, "close-tunnel", "--tunnel-id", id)
	if d, _ = c.run(true, "describe-tunnel", "--tunnel-id", id); d["tunnel"].(map[string]any)["status"] != "CLOSED" {
		t.Errorf("after close-tunnel: %v", d)
	}
	if _, stderr := c.run(false, "describe-tunnel", "--tunnel-id", "no-such-tunnel"); !strings.Contains(stderr, "ResourceNotFoundException") {
		t.Errorf("describe-tunnel of an unknown id: stderr %q, want ResourceNotFoundException", stderr)
	}
	if _, stderr := c.run(false, "rotate-tunnel-access-token", "--tunnel-id", id, "--client-mode", "SOURCE",
		"--destination-config", "services=SSH"); !strings.Contains(stderr, "InvalidRequestException") {
		t.Errorf("rotation with SOURCE and a destination config: stderr %q, want InvalidRequestException", stderr)
	}

	// Wrong credentials are refused as AWS refuses them.
	for _, tc := range []struct{ key, secret, want string }{
		{"AKIDPORTHOLETEST", "wrong-secret", "InvalidSignatureException"},
		{"AKIDSOMEONEELSE", "porthole-test-secret", "UnrecognizedClientException"},
	} {
		bad := *c
		bad.env = append(slices.Clone(c.env), "AWS_ACCESS_KEY_ID="+tc.key, "AWS_SECRET_ACCESS_KEY="+tc.secret)
		if _, stderr := bad.run(false, "list-tunnels"); !strings.Contains(stderr, tc.want) {
			t.Errorf("list-tunnels signed by %s with a wrong secret: stderr %q, want %s", tc.key, stderr, tc.want)
		}
	}
	// So are good credentials scoped to another region.
	elsewhere := *c
	elsewhere.region = "eu-west-1"
	if _, stderr := elsewhere.run(false, "list-tunnels"); !strings.Contains(stderr, "InvalidSignatureException") || !strings.Contains(stderr, "us-east-1/IoTSecuredTunneling/aws4_request") {
		t.Errorf("list-tunnels signed for eu-west-1: stderr %q, want InvalidSignatureException naming the us-east-1 scope", stderr)
	}

	// A tunnel opened while the broker is down is notified once it is back.
	broker.Stop()
	open2, _ := c.run(true, "open-tunnel", "--destination-config", "thingName=dev1,services=SSH")
	time.Sleep(300 * time.Millisecond)
	broker.Start()
	if n := nextNotify(t, dev1); n["clientAccessToken"] != open2["destinationAccessToken"] {
		t.Errorf("after the broker came back: %v, want the new tunnel's destination token", redact(n))
	}
	c.run(true, "close-tunnel", "--tunnel-id", open2["tunnelId"].(string), "--delete")

	select {
	case b := <-spy:
		t.Errorf("dev2 received a notification for dev1 (%d bytes): the ACL does not hold", len(b))
	default:
	}
}

// redact hides tokens in a failure message.
func redact(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if strings.Contains(strings.ToLower(k), "token") {
			v = "<token>"
		}
		out[k] = v
	}
	return out
}
