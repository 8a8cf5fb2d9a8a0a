package lab

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/porthole-iot/porthole/agent/tunnel"
	"github.com/porthole-iot/porthole/board"
	"github.com/porthole-iot/porthole/tools/console"
	"github.com/porthole-iot/porthole/tools/internal/atomicfile"
	"github.com/porthole-iot/porthole/tools/tunneld"
)

// Thing is the lab device's thing name.
const Thing = "lab-device"

// Options configure Run.
type Options struct {
	// StateDir keeps the lab's files between runs; "" means ".lab". A
	// relative path is in the working directory.
	StateDir string
	// SSHPort and HTTPPort are the source side's local ports; 0 picks free ones.
	SSHPort, HTTPPort int
	// NoAgent runs only the broker and tunneld (and the console), on 127.0.0.1: for an agent started
	// by hand on this machine or in a QEMU guest (the certificates name loopback and
	// 10.0.2.2 only). The lab writes the config of its own agent for it, without
	// the HTTP service (there is no status page), and prints the command that
	// runs an agent on it on this machine.
	NoAgent bool
	// Porthole is the porthole binary the agent runs from (required unless NoAgent
	// or Board).
	Porthole string
	// Board names a QEMU board (a folder under board/): the lab cross-builds
	// porthole for it, builds its initramfs, boots it and the agent runs in the
	// guest instead of as a host process. Needs the source tree and Go.
	Board string
	// BoardDir is the board/ folder; "" finds it from the working directory up.
	BoardDir string
	// Region is tunneld's: the region in its notifications, tunnel ARNs and
	// SigV4 credential scope, and the printed aws line's --region. The agent
	// dials this run's tunneld by its tunnel.endpoint, not by the region (an
	// agent without one would dial data.tunneling.iot.REGION.amazonaws.com).
	// "" means us-east-1 (tunneld.DefaultRegion); Run refuses others that
	// CheckRegion does.
	Region string
	// Console is the operator web console's listen address (tools/console):
	// loopback, as it serves plain HTTP and logs in with the lab's key
	// (porthole-lab refuses others, console.CheckLoopback); "" means no console.
	Console string
	// Out receives the progress lines and the commands to use.
	Out io.Writer

	// vendor stands in for the console's xterm.js files (console.Config.Vendor)
	// in tests; nil means the ones built in.
	vendor fs.FS
}

// Info is what lab.json holds: every endpoint, port and file of a running lab.
type Info struct {
	StateDir    string `json:"state_dir"`
	PID         int    `json:"pid"` // the lab's own
	Thing       string `json:"thing"`
	Broker      string `json:"broker"`
	Tunneld     string `json:"tunneld"`
	Region      string `json:"region"`
	CAFile      string `json:"ca_file"`
	DeviceCert  string `json:"device_cert"`
	DeviceKey   string `json:"device_key"`
	SSHKey      string `json:"ssh_key"`
	KnownHosts  string `json:"known_hosts,omitempty"`
	User        string `json:"user"`
	AgentConfig string `json:"agent_config,omitempty"`
	// AgentUsage runs an agent on AgentConfig on this machine (--no-agent).
	AgentUsage  string `json:"agent_command,omitempty"`
	AgentLog    string `json:"agent_log,omitempty"`
	AgentPID    int    `json:"agent_pid,omitempty"`
	Board       string `json:"board,omitempty"`
	BoardLog    string `json:"board_log,omitempty"`
	TunnelID    string `json:"tunnel_id,omitempty"`
	SourceToken string `json:"source_token_file,omitempty"`
	SSH         string `json:"ssh,omitempty"`
	HTTP        string `json:"http,omitempty"`
	StatusPage  string `json:"status_page,omitempty"`
	SSHCommand  string `json:"ssh_command,omitempty"`
	SFTPCommand string `json:"sftp_command,omitempty"`
	AWSCommand  string `json:"aws_command"`
	// AWSAccessKeyID and AWSSecretAccessKey sign the lab tunneld's control
	// plane (SigV4), as AWSCommand does: without them, any user of this
	// machine could open tunnels to the lab's device and take their tokens.
	// The secret is new each run.
	AWSAccessKeyID     string `json:"aws_access_key_id"`
	AWSSecretAccessKey string `json:"aws_secret_access_key"`
	ConnectUsage       string `json:"connect_command,omitempty"`
	// Console is the web console's URL; it holds the console's access token.
	Console string `json:"console_url,omitempty"`
}

// CheckRegion refuses a region an agent would not make a data-plane endpoint
// of (tunnel.ValidateEndpoint, as porthole connect --region), a narrower rule
// than the one tunneld takes in its notifications.
func CheckRegion(region string) error {
	if tunnel.ValidateEndpoint("", region, false) != nil {
		return fmt.Errorf("%q is not a region name: want 1-64 of a-z, 0-9 and -, such as eu-west-1", region)
	}
	return nil
}

// step prints one progress line with how long the step took.
type stepper struct {
	out io.Writer
}

// skipped is what a step returns when the lab goes on without it; the
// progress line says skipped, and why.
type skipped string

func (s skipped) Error() string { return string(s) }

func (s stepper) do(name string, f func() error) error {
	start := time.Now()
	fmt.Fprintf(s.out, "  %-34s", name+" ...")
	err := f()
	if why, ok := err.(skipped); ok {
		fmt.Fprintf(s.out, " skipped (%s)\n", why)
		return nil
	}
	if err != nil {
		fmt.Fprintf(s.out, " failed\n")
		return err
	}
	fmt.Fprintf(s.out, " ok (%v)\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// ErrInterrupted is what Run returns when ctx ends before the lab is up (Ctrl-C
// during start-up), whichever error the step it cut short ended with.
var ErrInterrupted = errors.New("interrupted during start-up")

// Run starts the lab and blocks until ctx ends, then stops everything it started.
func Run(ctx context.Context, opt Options) (err error) {
	if opt.StateDir == "" {
		opt.StateDir = ".lab"
	}
	if opt.Out == nil {
		opt.Out = io.Discard
	}
	if opt.Region == "" {
		opt.Region = tunneld.DefaultRegion
	}
	// Before the state directory is made, as the other refusals.
	if err := CheckRegion(opt.Region); err != nil {
		return fmt.Errorf("region %w", err)
	}
	dir, err := filepath.Abs(opt.StateDir)
	if err != nil {
		return err
	}
	if opt.Porthole != "" {
		// Absolute, so that the agent runs this file (not one found in $PATH) and
		// the printed connect line names it.
		if opt.Porthole, err = filepath.Abs(opt.Porthole); err != nil {
			return err
		}
	}
	// Before the state directory is made: a refused one is left as it was.
	if opt.Board == "" && !opt.NoAgent {
		fi, err := os.Stat(opt.Porthole)
		if err != nil {
			return prereqError{fmt.Errorf("the porthole binary %q is missing: build it with `make build`", opt.Porthole)}
		}
		// A release binary downloaded without its execute bit failed only
		// once the broker and tunneld were up, with exec's bare EACCES.
		if fi.IsDir() || unix.Access(opt.Porthole, unix.X_OK) != nil {
			return prereqError{fmt.Errorf("the porthole binary %q is not an executable file: "+
				"give the agent's binary (chmod +x one that was downloaded), or build it with `make build`", opt.Porthole)}
		}
	}
	// The user the device logs in: root in a board, and on this machine the
	// lab's own, as whom the agent runs (with --no-agent, the printed agent
	// line runs it so).
	loginUser := "root"
	if opt.Board == "" && os.Geteuid() != 0 {
		if loginUser, err = labUser(); err != nil {
			return prereqError{err}
		}
	}
	if opt.Board == "" {
		// With --no-agent too: the agent config it writes names the
		// authorized_keys in the state directory.
		if err := checkSafeDir(dir); err != nil {
			return prereqError{err}
		}
	}
	if err := checkStateDir(dir); err != nil {
		return prereqError{err}
	}
	lock, err := lockState(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	// lab.json describes a running lab: one left by an earlier run (stopped, or
	// killed) would name its pid and ports to scripts and to a second lab.
	labJSON := filepath.Join(dir, "lab.json")
	os.Remove(labJSON)
	defer os.Remove(labJSON)
	var bc board.Conf
	if opt.Board != "" {
		if opt.NoAgent {
			return errors.New("--board runs the agent in the board: it does not go with --no-agent")
		}
		if bc, err = loadBoard(opt.BoardDir, opt.Board); err != nil {
			return err
		}
	}
	if err := checkPorts(append(sourcePorts(opt), consolePort(opt)...)); err != nil {
		return err
	}
	st := stepper{opt.Out}
	info := Info{StateDir: dir, PID: os.Getpid(), Thing: Thing, Region: opt.Region, SSHKey: filepath.Join(dir, "id_ed25519"), User: loginUser}
	logFile, err := os.OpenFile(filepath.Join(dir, "lab.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) // dir made by lockState
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := removeLeftovers(dir, log); err != nil {
		return err
	}

	var stops []func()
	defer func() {
		if err != nil && ctx.Err() != nil {
			// The step cut short may fail with ctx's error, a killed child, or the
			// agent ending first (Ctrl-C in a terminal signals it too).
			log.Info("interrupted during start-up", "err", err)
			err = ErrInterrupted
		}
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		if err == nil || errors.Is(err, ErrInterrupted) {
			fmt.Fprintln(opt.Out, "lab stopped; everything it started is gone")
		}
	}()

	var p *pki
	var brokerCert, brokerKey, tdCert, tdKey, pubCert, pubKey string
	if err := st.do("state in "+opt.StateDir, func() error {
		if p, err = loadOrCreatePKI(dir); err != nil {
			return err
		}
		info.CAFile = p.caFile()
		if brokerCert, brokerKey, err = p.leaf(dir, "broker", true); err != nil {
			return err
		}
		if tdCert, tdKey, err = p.leaf(dir, "tunneld", true); err != nil {
			return err
		}
		if pubCert, pubKey, err = p.leaf(dir, "tunneld-publisher", false); err != nil {
			return err
		}
		devDir := filepath.Join(dir, "device")
		if err := os.MkdirAll(devDir, 0o700); err != nil {
			return err
		}
		if info.DeviceCert, info.DeviceKey, err = p.leaf(devDir, Thing, false); err != nil {
			return err
		}
		pub, err := sshKey(info.SSHKey)
		if err != nil {
			return err
		}
		return atomicfile.Write(filepath.Join(devDir, "authorized_keys"), gossh.MarshalAuthorizedKey(pub), 0o600)
	}); err != nil {
		return err
	}

	var brokerStop func()
	deviceListens := make(chan struct{})
	if err := st.do("MQTT broker (mutual TLS)", func() error {
		srv, addr, err := startBroker("127.0.0.1:0", info.CAFile, brokerCert, brokerKey, "tunneld-publisher", Thing, deviceListens, log.With("component", "broker"))
		if err != nil {
			return err
		}
		info.Broker = addr
		brokerStop = func() { closeBroker(srv) }
		return nil
	}); err != nil {
		return err
	}
	stops = append(stops, brokerStop)

	var td *tunneld.Server
	if err := st.do("tunneld (TLS, notify over MQTT)", func() error {
		cert, err := tls.LoadX509KeyPair(tdCert, tdKey)
		if err != nil {
			return err
		}
		notifier, err := tunneld.NewMQTTNotifier(tunneld.MQTTConfig{Broker: info.Broker, CAFile: info.CAFile, CertFile: pubCert, KeyFile: pubKey,
			ClientID: "tunneld-publisher", Logger: log.With("component", "notifier")})
		if err != nil {
			return err
		}
		info.AWSAccessKeyID, info.AWSSecretAccessKey = "lab", rand.Text()
		td, err = tunneld.New(tunneld.Config{Region: info.Region, DataDir: filepath.Join(dir, "tunneld"),
			Credentials: map[string]string{info.AWSAccessKeyID: info.AWSSecretAccessKey},
			TLS:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, Notifier: notifier,
			Logger: log.With("component", "tunneld")})
		if err != nil {
			notifier.Close(context.Background())
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			td.Close()
			notifier.Close(context.Background())
			return err
		}
		info.Tunneld = "https://" + ln.Addr().String()
		// Serve waits out accept errors that pass; any other ends the lab's
		// tunnels, and says so rather than leave the device's tunnels hanging.
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := td.Serve(ln); !errors.Is(err, tunneld.ErrServerClosed) {
				log.Error("tunneld stopped serving: the lab's tunnels are cut; restart the lab", "err", err)
			}
		}()
		stops = append(stops, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			td.Shutdown(sctx)
			<-served
			notifier.Close(sctx)
		})
		return nil
	}); err != nil {
		return err
	}
	tdHost := strings.TrimPrefix(info.Tunneld, "https://")
	consoleLine := ""
	// consoleKeys is the console's host key store once it runs; nil (none
	// pinned, no file written) without a console.
	var consoleKeys *console.HostKeys
	if opt.Console != "" {
		if err := st.do("web console", func() error {
			keys := &console.HostKeys{Path: filepath.Join(info.StateDir, "console_host_keys.json")}
			url, stop, err := startConsole(opt.Console, td, info, keys, tdHost, opt.vendor, log.With("component", "console"))
			if errors.Is(err, console.ErrNoVendor) {
				consoleLine = "\nWeb console: not in this build (xterm.js missing): run `make build`, which runs `make console-assets`\n"
				return skipped("xterm.js is not in this build")
			}
			if err != nil {
				return takenSince(err, consolePort(opt))
			}
			info.Console, consoleKeys = url, keys
			consoleLine = "\nWeb console (SSH in the browser; the address holds its access token):\n  " + url + "\n"
			stops = append(stops, stop)
			return nil
		}); err != nil {
			return err
		}
	}
	// The command lines, printed and in lab.json, name files by absolute paths
	// (dir is absolute): the lab holds its terminal, so they are pasted into
	// another one, which starts elsewhere (the home directory), or run by scripts.
	np := noProxyPrefix(tdHost)
	info.AWSCommand = fmt.Sprintf("%sAWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s aws iotsecuretunneling open-tunnel "+
		"--destination-config thingName=%s,services=SSH --endpoint-url %s --region %s --ca-bundle %s",
		np, info.AWSAccessKeyID, info.AWSSecretAccessKey, Thing, info.Tunneld, info.Region, shellArg(info.CAFile))
	if np != "" {
		consoleLine = "  (no_proxy: https_proxy is set here, and a proxy cannot reach this machine's loopback, where the lab is)\n" + consoleLine
	}

	if opt.NoAgent {
		if info.AgentConfig, err = writeAgentConfig(dir, info, tdHost, ""); err != nil {
			return err
		}
		info.AgentUsage = agentUsage(opt.Porthole, tdHost, info.AgentConfig)
		info.ConnectUsage = connectCommand(opt.Porthole, tdHost, info.CAFile, opt.SSHPort)
		if err := writeInfo(dir, info); err != nil {
			return err
		}
		fmt.Fprintf(opt.Out, "\nBroker  mqtts://%s (device certificates from %s)\nTunneld %s\n\n"+
			"Run the agent (its config names this run's ports; the lab writes it again at every start):\n  %s\n"+
			"Open a tunnel:\n  %s\nConnect:\n  %s\n%s\nDetails: %s. Ctrl-C stops the lab.\n",
			info.Broker, rel(info.CAFile), info.Tunneld, info.AgentUsage, info.AWSCommand, info.ConnectUsage,
			consoleLine, rel(filepath.Join(dir, "lab.json")))
		<-ctx.Done()
		return nil
	}

	var statusAddr string
	if err := st.do("device status page (HTTP)", func() error {
		addr, stop, err := serveStatusPage(statusPageTimeout)
		if err != nil {
			return err
		}
		statusAddr = addr
		info.StatusPage = "http://" + addr
		stops = append(stops, stop)
		return nil
	}); err != nil {
		return err
	}

	var agentExited <-chan struct{}
	// agentStatus says how the agent ended, once agentExited is closed.
	agentStatus := func() string { return "stopped" }
	hostKeyFile := filepath.Join(dir, "device", "data", "ssh_host_ed25519_key")
	logPath, subscribeWithin, who := filepath.Join(dir, "agent.log"), 30*time.Second, "the agent"
	if opt.Board != "" {
		bf := newBoardFiles(dir, opt.Board)
		hostKeyFile = bf.hostKey
		info.Board = opt.Board
		info.BoardLog = filepath.Join(dir, "board-"+opt.Board+".log")
		info.AgentConfig = filepath.Join(bf.overlay, "etc", "porthole", "porthole.toml")
		logPath, subscribeWithin, who = info.BoardLog, bc.BootTimeout, "the agent in board "+opt.Board
		if err := st.do(strings.TrimSpace(fmt.Sprintf("porthole for %s (%s %s", opt.Board, bc.GOARCH, bc.GOENV))+")", func() error {
			return crossBuild(ctx, bc, bf)
		}); err != nil {
			return err
		}
		if err := st.do("board image (board/build.sh; fetches Debian packages once)", func() error {
			return buildImage(ctx, bc, bf, info, port(info.Broker), port(tdHost), port(statusAddr))
		}); err != nil {
			return err
		}
		if err := st.do("board boots (QEMU, child process)", func() error {
			exited, stop, err := bootBoard(bc, bf, info.BoardLog)
			if err != nil {
				return err
			}
			agentExited = exited
			stops = append(stops, stop)
			return nil
		}); err != nil {
			return err
		}
	} else if err := st.do("agent (porthole agent, child process)", func() error {
		var err error
		if info.AgentConfig, err = writeAgentConfig(dir, info, tdHost, statusAddr); err != nil {
			return err
		}
		info.AgentLog = logPath
		f, err := os.OpenFile(info.AgentLog, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		cmd := agentCommand(opt.Porthole, info.AgentConfig)
		cmd.Stdout, cmd.Stderr = f, f
		// Its own process group (startGroup), which the stop signals: a
		// --porthole wrapper (a shell script that runs the agent without exec)
		// took the signal alone and left the agent running. A Ctrl-C in the
		// terminal reaches the lab only, which stops the agent.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		agent, err := startGroup(cmd)
		f.Close()
		if err != nil {
			return err
		}
		info.AgentPID = cmd.Process.Pid
		agentExited = agent.exited
		agentStatus = func() string { return cmd.ProcessState.String() }
		stops = append(stops, func() {
			agent.signal(syscall.SIGTERM)
			select {
			case <-agent.exited:
				return
			case <-time.After(agentStopQuiet):
			}
			// A stop that takes longer than the agent's own (a frozen or
			// stopped agent) says what the lab waits for, not a silent hang.
			fmt.Fprintf(opt.Out, "the agent (pid %d) has not stopped %v after SIGTERM; killing it in %v\n",
				cmd.Process.Pid, agentStopQuiet, agentStopKill-agentStopQuiet)
			select {
			case <-agent.exited:
			case <-time.After(agentStopKill - agentStopQuiet):
				agent.signal(syscall.SIGKILL)
				<-agent.exited
			}
		})
		return nil
	}); err != nil {
		return err
	}

	if err := st.do("agent subscribes to its notify topic", func() error {
		select {
		case <-deviceListens:
			return nil
		case <-agentExited:
			if interruptedSoon(ctx) {
				return ctx.Err()
			}
			return fmt.Errorf("%s exited before it subscribed; the end of %s:\n%s", who, rel(logPath), tail(logPath, 10))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(subscribeWithin):
			return fmt.Errorf("%s did not subscribe within %v; the end of %s:\n%s", who, subscribeWithin, rel(logPath), tail(logPath, 10))
		}
	}); err != nil {
		return err
	}

	var open *tunneld.OpenTunnelOutput
	if err := st.do("tunnel for "+Thing+" (SSH, HTTP)", func() error {
		closeLeftTunnels(ctx, td, log)
		open, err = td.OpenTunnel(ctx, &tunneld.OpenTunnelInput{Description: labTunnel,
			DestinationConfig: &tunneld.DestinationConfig{ThingName: Thing, Services: []string{"SSH", "HTTP"}},
			TimeoutConfig:     &tunneld.TimeoutConfig{MaxLifetimeTimeoutMinutes: int(tunnelLifetime / time.Minute)}})
		if err != nil {
			return err
		}
		info.TunnelID = open.TunnelID
		// Every start opens a tunnel; closing it on the way out (before tunneld
		// stops) keeps restarts from piling up open tunnels that the agent resumes.
		stops = append(stops, func() {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := td.CloseTunnel(cctx, &tunneld.CloseTunnelInput{TunnelID: open.TunnelID}); err != nil {
				log.Warn("closing the lab's tunnel", "tunnel", open.TunnelID, "err", err)
			}
		})
		info.SourceToken = filepath.Join(dir, "source.token")
		return atomicfile.Write(info.SourceToken, []byte(open.SourceAccessToken+"\n"), 0o600)
	}); err != nil {
		return err
	}

	if err := st.do("agent connects the tunnel", func() error {
		return waitDestination(ctx, td, open.TunnelID, agentExited, who, logPath, 60*time.Second)
	}); err != nil {
		return err
	}

	srcErr := make(chan error, 1)
	beforeSource()
	if err := st.do("source side on local ports", func() error {
		tok, err := tunnel.NewAccessToken(open.SourceAccessToken)
		if err != nil {
			return err
		}
		var mu sync.Mutex
		got := map[string]string{}
		ready := make(chan struct{})
		src := &tunnel.Source{
			Config: sourceConfig(tdHost, tok, info.CAFile, log.With("component", "source")),
			Listen: map[string]string{"SSH": strconv.Itoa(opt.SSHPort), "HTTP": strconv.Itoa(opt.HTTPPort)},
			OnListen: func(service string, a net.Addr) {
				mu.Lock()
				defer mu.Unlock()
				got[service] = a.String()
				if len(got) == 2 {
					close(ready)
				}
			},
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); srcErr <- src.Run(sctx) }()
		stops = append(stops, func() { cancel(); <-done })
		select {
		case <-ready:
		case err := <-srcErr:
			if err == nil {
				err = errors.New("source stopped")
			}
			// Checked once the source has let go of the ports it took.
			return takenSince(err, sourcePorts(opt))
		case <-time.After(30 * time.Second):
			return errors.New("the source side did not start listening within 30s")
		}
		mu.Lock()
		info.SSH, info.HTTP = got["SSH"], got["HTTP"]
		mu.Unlock()
		return nil
	}); err != nil {
		return err
	}

	_, sshPort, _ := net.SplitHostPort(info.SSH)
	info.KnownHosts = filepath.Join(dir, "known_hosts")
	hostKey, err := devicePublicKey(hostKeyFile)
	if err != nil {
		return err
	}
	if err := writeKnownHosts(info.KnownHosts, hostKey); err != nil {
		return err
	}
	if consoleKeys != nil {
		if err := pinConsoleHostKey(consoleKeys, hostKey); err != nil {
			return err
		}
	}
	// IdentitiesOnly: the lab's key first, not an ssh-agent's keys, each of which
	// the device would count against its MaxAuthTries (as OpenSSH does).
	opts := fmt.Sprintf("%s -o IdentitiesOnly=yes -o %s", identityArg(info.SSHKey),
		shellArg("UserKnownHostsFile="+sshConfigWord(sshFile(info.KnownHosts))))
	info.SSHCommand = fmt.Sprintf("ssh %s -p %s %s@127.0.0.1", opts, sshPort, info.User)
	info.SFTPCommand = fmt.Sprintf("sftp %s -P %s %s@127.0.0.1", opts, sshPort, info.User)
	if err := writeInfo(dir, info); err != nil {
		return err
	}
	where, stopsWhat := "", ""
	if opt.Board != "" {
		where, stopsWhat = fmt.Sprintf(" (the agent runs in QEMU board %s)", opt.Board), " and powers the board off"
	}
	fmt.Fprintf(opt.Out, `
The lab is up: device %s%s is reachable through a tunnel.

  SSH     %s
  SFTP    %s
  HTTP    http://%s/   (the device's status page, through the same tunnel)

Open more tunnels by hand (tunneld speaks the AWS API):
  %s
and connect to one with
  %s
%s
Logs: %s, %s. Everything else: %s.
Ctrl-C stops the lab%s.
`, Thing, where, info.SSHCommand, info.SFTPCommand, info.HTTP, info.AWSCommand, connectCommand(opt.Porthole, tdHost, info.CAFile, morePort(opt.SSHPort, opt.HTTPPort)), consoleLine,
		rel(logPath), rel(filepath.Join(dir, "lab.log")), rel(filepath.Join(dir, "lab.json")), stopsWhat)

	// The lab's parts outlive its own tunnel: the console and the AWS line open
	// others. Only an unexpected end of the source side stops the lab.
	for srcDone, agentDone := srcErr, agentExited; ; {
		select {
		case <-ctx.Done():
			return nil
		case err := <-srcDone:
			if ctx.Err() != nil { // Ctrl-C ends the source side too
				return nil
			}
			why, rotated := sourceEnded(err)
			if why == "" {
				return fmt.Errorf("source side stopped: %v", err)
			}
			srcDone = nil
			parts := []string{"the broker", "tunneld"}
			if agentDone != nil { // nil: the agent has exited, and said so
				parts = append(parts, "the agent")
			}
			if info.Console != "" {
				parts = append(parts, "the console")
			}
			running := strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1] + " keep"
			if rotated && agentDone == nil {
				fmt.Fprintf(opt.Out, "\nThe lab's source side stopped: %s. Tunnel %s stays open, but the agent has exited: restart the lab (Ctrl-C, then start it again) for a device to reach. %s running until Ctrl-C.\n",
					why, open.TunnelID, upper(running))
				continue
			}
			if rotated {
				// The tunnel is open and the agent on it: a porthole connect
				// with the new token on the lab's own ports makes the lines
				// printed above, and lab.json's, work again.
				_, sshPort, _ := net.SplitHostPort(info.SSH)
				_, httpPort, _ := net.SplitHostPort(info.HTTP)
				port, _ := strconv.Atoi(sshPort)
				fmt.Fprintf(opt.Out, "\nThe lab's source side stopped: %s. Tunnel %s stays open, with the agent on it; SSH on %s and HTTP on %s, and the SSH and SFTP lines above, work again once a source side joins with the new token: put the sourceAccessToken the rotation returned in a file TOKEN (%s holds the revoked one) and run\n  %s -L HTTP=%s\n%s running until Ctrl-C.\n",
					why, open.TunnelID, info.SSH, info.HTTP, rel(info.SourceToken), connectCommand(opt.Porthole, tdHost, info.CAFile, port), httpPort, upper(running))
				continue
			}
			fmt.Fprintf(opt.Out, "\nThe lab's tunnel %s is gone: %s. SSH on %s and HTTP on %s no longer work; %s running until Ctrl-C.\n",
				open.TunnelID, why, info.SSH, info.HTTP, running)
		case <-agentDone:
			agentDone = nil
			if interruptedSoon(ctx) {
				return nil
			}
			fmt.Fprintf(opt.Out, "\n%s exited (%s): the device is gone and ssh through the lab will hang; its log: %s. Ctrl-C stops the lab.\n",
				upper(who), agentStatus(), rel(logPath))
			// lab.json no longer names a pid that is not the agent's (and
			// may be another program's soon).
			info.AgentPID = 0
			if err := writeInfo(dir, info); err != nil {
				fmt.Fprintf(opt.Out, "updating %s: %v\n", rel(labJSON), err)
			}
		}
	}
}

// interruptedSoon reports whether ctx ends within a second. The lab asks when the
// agent (or its board) has exited: Ctrl-C in a terminal signals the agent too,
// which may exit before the lab's own signal handler has ended ctx, and that is
// an interrupt, not an agent that failed.
func interruptedSoon(ctx context.Context) bool {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return true
	case <-t.C:
		return false
	}
}

// The lab's stop waits agentStopQuiet for the agent to end after SIGTERM
// before it says so (the agent's own stop takes at most 5 s, sessions that
// ignore their hangup included), and kills it at agentStopKill.
const agentStopQuiet, agentStopKill = 5500 * time.Millisecond, 7 * time.Second

// tunnelLifetime is the lifetime of the tunnel each lab run opens (AWS's
// maximum, 12 h); tunneld closes it then.
const tunnelLifetime = 12 * time.Hour

// sourceEnded says why the source side ended when tunneld ended it (the tunnel
// expired or was closed, or the source token was refused), and "" for any
// other end; rotated: the source token was rotated, and the tunnel stays open.
func sourceEnded(err error) (why string, rotated bool) {
	if errors.Is(err, tunnel.ErrClosedByService) {
		// The Close frame's reason is in the error's text only.
		if strings.Contains(err.Error(), tunneld.CloseReasonExpired) {
			return fmt.Sprintf("it reached its lifetime of %d h and tunneld closed it; restart the lab (Ctrl-C, then start it again) for a new one", int(tunnelLifetime.Hours())), false
		}
		if strings.Contains(err.Error(), tunneld.CloseReasonTokenRotated) {
			return "its source token was rotated (RotateTunnelAccessToken)", true
		}
		return "tunneld closed it (CloseTunnel)", false
	}
	var he *tunnel.HandshakeError
	if errors.As(err, &he) && he.Body == tunneld.BodyTokenRotated {
		// Rotated while the source side was between connections: its
		// reconnect with the revoked token is refused so.
		return "its source token was rotated (RotateTunnelAccessToken)", true
	}
	if errors.As(err, &he) && !he.Temporary() {
		return fmt.Sprintf("tunneld refused the lab's source token (HTTP %d: the tunnel was closed or the token rotated)", he.StatusCode), false
	}
	return "", false
}

// upper capitalises the first letter of s.
func upper(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// rel shortens a path under the working directory for printing.
func rel(p string) string {
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

// labTunnel is the description of the tunnel each lab run opens.
const labTunnel = "porthole lab"

// closeLeftTunnels closes the lab's own tunnels still open: a lab killed before
// its stops ran (kill -9, a power cut) left its tunnel open in tunneld's state,
// and the agent would resume it at every later run. Tunnels opened otherwise
// (the printed aws line) are left alone.
func closeLeftTunnels(ctx context.Context, td *tunneld.Server, log *slog.Logger) {
	in := &tunneld.ListTunnelsInput{ThingName: Thing, MaxResults: 100}
	for {
		out, err := td.ListTunnels(ctx, in)
		if err != nil {
			log.Warn("listing the tunnels a killed lab left open", "err", err)
			return
		}
		for _, t := range out.TunnelSummaries {
			if t.Status == tunneld.StatusOpen && t.Description == labTunnel {
				log.Info("closing the tunnel a lab that did not stop left open", "tunnel", t.TunnelID)
				if err := td.CloseTunnel(ctx, &tunneld.CloseTunnelInput{TunnelID: t.TunnelID}); err != nil {
					log.Warn("closing the tunnel a killed lab left open", "tunnel", t.TunnelID, "err", err)
				}
			}
		}
		if out.NextToken == "" {
			return
		}
		in.NextToken = out.NextToken
	}
}

// morePort is the local port the printed line for one more tunnel suggests: 2223,
// or the next one the lab does not listen on itself.
func morePort(used ...int) int {
	p := 2223
	for slices.Contains(used, p) {
		p++
	}
	return p
}

// connectCommand is the porthole connect line for a tunnel of tunneld at tdHost
// (TOKEN: its source token's file) with SSH on local port sshPort, run with the
// porthole binary at path porthole ("": the one in $PATH). Both paths are
// absolute, as Run makes them.
func connectCommand(porthole, tdHost, caFile string, sshPort int) string {
	prog := "porthole"
	if porthole != "" {
		prog = shellArg(porthole)
	}
	return fmt.Sprintf("%s%s connect --endpoint %s --ca-file %s --token-file TOKEN -L SSH=%d", noProxyPrefix(tdHost), prog, tdHost, shellArg(caFile), sshPort)
}

// noProxyPrefix is "no_proxy=HOST " for the command lines the lab prints when
// this environment would send a connection to tdHost (host:port) through a
// proxy (https_proxy or HTTPS_PROXY, NO_PROXY not covering it): the lab is on
// loopback, which an operator's proxy cannot reach. porthole connect and the
// AWS CLI honour no_proxy; "" otherwise.
func noProxyPrefix(tdHost string) string {
	if u, err := tunnel.EnvironmentProxy(tdHost, "", false); u == nil && err == nil {
		return ""
	}
	host, _, _ := net.SplitHostPort(tdHost)
	return "no_proxy=" + shellArg(host) + " "
}

// noProxy is the Proxy of the tunnel clients the lab runs in process (its
// source side, its console): never the operator's https_proxy.
var noProxy = tunnel.ProxyURL(nil)

// sourceConfig is the Config of the lab's source side, for the tunnel at tdHost.
func sourceConfig(tdHost string, tok tunnel.Token, caFile string, log *slog.Logger) tunnel.Config {
	return tunnel.Config{Endpoint: tdHost, AccessToken: tok, CAFile: caFile, Proxy: noProxy, Logger: log}
}

// agentCommand runs the lab's agent with config: in this process's
// environment without the proxy variables porthole reads (https_proxy,
// HTTPS_PROXY): every connection of the lab is on loopback, which an
// operator's proxy cannot reach. (The agent's SSH sessions never get its
// environment.)
func agentCommand(porthole, config string) *exec.Cmd {
	cmd := exec.Command(porthole, "agent", "-c", config)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == "https_proxy" || k == "HTTPS_PROXY"
	})
	return cmd
}

// shellArg is s as one word of a POSIX shell command line: as it is when it holds
// only characters no shell treats specially, else in single quotes.
func shellArg(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:=@%+,-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sshFile is the file path p as ssh reads a file option (-i, UserKnownHostsFile):
// it expands % tokens in them, and %% is a literal %.
func sshFile(p string) string { return strings.ReplaceAll(p, "%", "%%") }

// identityArg is the ssh option naming the key file p: -i p, or, when p holds a %,
// -o IdentityFile=p with the % doubled (ssh looks for an -i file as written, and
// then expands % tokens in it).
func identityArg(p string) string {
	if !strings.Contains(p, "%") {
		return "-i " + shellArg(p)
	}
	return "-o " + shellArg("IdentityFile="+sshConfigWord(sshFile(p)))
}

// sshConfigWord is s as one word of an ssh -o option's value: ssh splits
// UserKnownHostsFile's value at whitespace (a list of files), unless the word is
// in double quotes, in which \ escapes " and \.
func sshConfigWord(s string) string {
	if !strings.ContainsAny(s, " \t\"'\\#") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// agentUsage is the command line that runs an agent on the config file config
// (an absolute path), with the porthole binary at path porthole ("": the one
// in $PATH), as agentCommand runs the lab's own: never through the operator's
// proxy (noProxyPrefix).
func agentUsage(porthole, tdHost, config string) string {
	prog := "porthole"
	if porthole != "" {
		prog = shellArg(porthole)
	}
	return fmt.Sprintf("%s%s agent -c %s", noProxyPrefix(tdHost), prog, shellArg(config))
}

// writeAgentConfig writes the config of the lab's agent (agentConfig) to
// device/porthole.toml in the state directory dir and returns its path.
func writeAgentConfig(dir string, info Info, tdHost, statusAddr string) (string, error) {
	path := filepath.Join(dir, "device", "porthole.toml")
	return path, atomicfile.Write(path, []byte(agentConfig(dir, info, tdHost, statusAddr)), 0o600)
}

// agentConfig is the config of the lab's agent, the device: this run's broker
// and tunneld, the device's files in dir, its SSH service and the HTTP
// service to the device status page at statusAddr ("": none, left out).
func agentConfig(dir string, info Info, tdHost, statusAddr string) string {
	http := ""
	if statusAddr != "" {
		http = fmt.Sprintf("HTTP = %q\n", statusAddr)
	}
	return fmt.Sprintf(`# Written by porthole-lab on every start.
thing_name = %q
data_dir = %q

[mqtt]
endpoint = %q
ca_file = %q
cert_file = %q
key_file = %q
event_topic = "porthole/events/%s"

[tunnel]
endpoint = %q
ca_file = %q

[services]
SSH = "builtin"
%s
[ssh]
authorized_keys = [%q]

[log]
level = "info"
`, Thing, filepath.Join(dir, "device", "data"), info.Broker, info.CAFile, info.DeviceCert, info.DeviceKey, Thing,
		tdHost, info.CAFile, http, filepath.Join(dir, "device", "authorized_keys"))
}

// waitDestination waits until tunneld reports the destination connected; if the
// agent (who: the agent, or the board it runs in) exits first, the error carries
// the end of its log.
func waitDestination(ctx context.Context, td *tunneld.Server, id string, exited <-chan struct{}, who, logPath string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		out, err := td.DescribeTunnel(ctx, &tunneld.DescribeTunnelInput{TunnelID: id})
		if err != nil {
			return err
		}
		if s := out.Tunnel.DestinationConnectionState; s != nil && s.Status == "CONNECTED" {
			return nil
		}
		select {
		case <-exited:
			if interruptedSoon(ctx) {
				return ctx.Err()
			}
			return fmt.Errorf("%s exited; the end of %s:\n%s", who, rel(logPath), tail(logPath, 10))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not connect within %v; the end of %s:\n%s", who, limit, rel(logPath), tail(logPath, 10))
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// writeKnownHosts pins the agent's host key for every port of 127.0.0.1: the
// lab's SSH port, and the port of any `porthole connect -L SSH=PORT` the lab
// suggests for a tunnel opened by hand, which reaches the same device. The file
// serves only the lab's ssh lines (UserKnownHostsFile); another server on
// 127.0.0.1 has another key, which ssh then refuses.
func writeKnownHosts(path string, key gossh.PublicKey) error {
	line := "[127.0.0.1]:* " + string(gossh.MarshalAuthorizedKey(key))
	return atomicfile.Write(path, []byte(line), 0o644)
}

// devicePublicKey reads the public half of the device's host key file.
func devicePublicKey(hostKey string) (gossh.PublicKey, error) {
	b, err := os.ReadFile(hostKey)
	if err != nil {
		return nil, fmt.Errorf("reading the agent's host key: %w", err)
	}
	s, err := gossh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("the agent's host key: %w", err)
	}
	return s.PublicKey(), nil
}

func writeInfo(dir string, info Info) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, "lab.json"), append(b, '\n'), 0o600)
}

// checkSafeDir refuses a state directory below a directory that others can write
// (like /tmp): the agent's SSH server, like OpenSSH's StrictModes, ignores an
// authorized_keys file there, and the printed ssh line would not work. It checks
// the path as given, which the agent's configuration names, and its real path
// with symlinks resolved, so that a symlink to a directory under /tmp does not
// get around it.
func checkSafeDir(dir string) error {
	resolved, err := realPath(dir)
	if err != nil {
		return fmt.Errorf("resolving the state directory %s: %w", dir, err)
	}
	name := dir
	if resolved != dir {
		name = fmt.Sprintf("%s (really %s)", dir, resolved)
	}
	for _, p := range []string{resolved, dir} {
		d, owner := unsafeParent(p)
		switch {
		case d == "":
		case owner >= 0:
			// The agent refuses a data directory below one another user owns,
			// as OpenSSH's StrictModes does (`sudo make lab` in a user's
			// checkout): said now, before a root-owned .lab is made there.
			return fmt.Errorf("the state directory %s is below %s, which belongs to uid %d, not to you (uid %d) or root: "+
				"the agent refuses a data directory that another user could change; run the lab as that user (without sudo), "+
				"or choose another --state", name, d, owner, os.Geteuid())
		default:
			return fmt.Errorf("the state directory %s is below %s, which others can write: the agent's SSH server would ignore "+
				"its authorized_keys there (as OpenSSH does); choose another --state, e.g. under your home directory", name, d)
		}
	}
	return nil
}

// checkStateDir refuses a state directory, if there is one, that another user
// could change: one that group or others can write, or that belongs to a user
// other than root and this one. Whoever can would replace the lab's CA key, or
// the authorized_keys its agent trusts. It is said in the lab's words and
// before anything is written: lockState (tunneld.LockDir) refuses the
// directory too, checked on the directory it opens, but speaks of tunneld's
// state file.
func checkStateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil // lockState makes it, or says why it cannot
	}
	mode := uint32(fi.Mode().Perm())
	if fi.Mode()&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	if uid, ok := fileOwner(fi); ok && uid != 0 && uid != os.Geteuid() {
		return fmt.Errorf("the state directory %s belongs to uid %d, not to you (uid %d) or root: that user could replace "+
			"the lab's CA key and the device's keys in it; run the lab as that user (without sudo), or choose another --state", dir, uid, os.Geteuid())
	}
	if mode&0o022 != 0 {
		return fmt.Errorf("the state directory %s is writable by group or others (mode %04o): another user could replace "+
			"the lab's CA key and the device's keys in it; run chmod go-w %s, or choose another --state", dir, mode, shellArg(dir))
	}
	return nil
}

// unsafeParent returns the first directory above path that group or others can
// write (owner -1), or that belongs to a user other than root and this one (that
// user's uid), or "" if there is none.
func unsafeParent(path string) (dir string, owner int) {
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil {
			if fi.Mode().Perm()&0o022 != 0 {
				return d, -1
			}
			if uid, ok := fileOwner(fi); ok && uid != 0 && uid != os.Geteuid() {
				return d, uid
			}
		}
		if d == "/" || d == "." {
			return "", -1
		}
	}
}

// fileOwner is the uid that owns fi, if the platform says.
func fileOwner(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// realPath resolves the symlinks in the absolute path p, as far as it exists; the
// missing rest is joined on unchanged.
func realPath(p string) (string, error) {
	rest := ""
	for {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) || filepath.Dir(p) == p {
			return "", err
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = filepath.Dir(p)
	}
}
