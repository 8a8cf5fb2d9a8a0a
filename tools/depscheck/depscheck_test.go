package depscheck

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const (
	module = "github.com/porthole-iot/porthole"
	device = module + "/agent/cmd/porthole"
)

// forbidden are import paths the device binary must not link, with why; each
// covers the packages below it too, unless it ends in $ (exactly that package).
var forbidden = []struct{ path, why string }{
	{module + "/tools/", "host tools (tunneld, lab, packaging) are never linked into the device"},
	{module + "/agent/tunnel/dataplane", "the service side of the data plane belongs to tunneld and tests"},
	{module + "/agent/tunnel/tunneltest", "test fake"},
	{"github.com/mochi-mqtt/", "the lab broker"},
	{"google.golang.org/protobuf/reflect", "protobuf reflection runtime (~1.5 MB); the device encodes with protowire"},
	{"github.com/coder/websocket", "agent/tunnel has its own WebSocket client"},
	{"net/http$", "the device speaks HTTP only for the WebSocket handshake, which agent/tunnel writes itself"},
	{"github.com/eclipse/paho.golang/autopaho", "it links gorilla/websocket and net/http; agent/notify runs paho's client itself"},
	{"github.com/gorilla/websocket", "a second WebSocket library"},
	{"github.com/BurntSushi/toml", "agent/internal/toml decodes the config (~0.13 MiB smaller on mipsle)"},
}

// deviceGraph lists the device binary's packages, as make cross builds it for
// linux/mipsle, with each package's direct imports.
func deviceGraph(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-tags", "netgo,osusergo",
		"-f", "{{.ImportPath}} {{join .Imports \" \"}}", device)
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", device, err, stderr.String())
	}
	g := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		g[f[0]] = f[1:]
	}
	return g
}

// chain returns an import chain from the device's main package to target.
func chain(g map[string][]string, target string) []string {
	prev := map[string]string{device: ""}
	queue := []string{device}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == target {
			var path []string
			for ; p != ""; p = prev[p] {
				path = append([]string{p}, path...)
			}
			return path
		}
		for _, q := range g[p] {
			if _, seen := prev[q]; !seen {
				if _, ok := g[q]; ok {
					prev[q] = p
					queue = append(queue, q)
				}
			}
		}
	}
	return nil
}

func matches(pkg, pattern string) bool {
	if p, exact := strings.CutSuffix(pattern, "$"); exact {
		return pkg == p
	}
	if strings.HasSuffix(pattern, "/") {
		return strings.HasPrefix(pkg, pattern)
	}
	return pkg == pattern || strings.HasPrefix(pkg, pattern+"/")
}

// without returns g with pkg and the edges to it removed.

func TestDeviceBinaryDeps(t *testing.T) {
	g := deviceGraph(t)
	if len(g) < 50 {
		t.Fatalf("go list -deps %s listed %d packages; want the whole graph", device, len(g))
	}
	for _, f := range forbidden {
		t.Run(strings.Trim(strings.ReplaceAll(f.path, "/", "_"), "_$"), func(t *testing.T) {
			for pkg := range g {
				if !matches(pkg, f.path) {
					continue
				}
				c := chain(g, pkg)
				why := strings.Join(c, "\n  -> ")
				t.Errorf("the device binary links %s (%s); import chain:\n  %s", pkg, f.why, why)
			}
		})
	}
}

func TestChain(t *testing.T) {
	g := map[string][]string{device: {"a", "b"}, "a": {"c"}, "b": {"c"}, "c": {"net/http"}, "net/http": nil}
	got := strings.Join(chain(g, "net/http"), " ")
	if want := device + " a c net/http"; got != want {
		t.Errorf("chain = %q, want %q", got, want)
	}
	if c := chain(g, "missing"); c != nil {
		t.Errorf("chain(missing) = %v, want nil", c)
	}
}
