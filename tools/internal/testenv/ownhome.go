package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// ownHomeEnv marks a test process that InOwnHome started: it holds root's
// home there.
const ownHomeEnv = "PORTHOLE_TEST_OWN_HOME"

// OwnHome is root's home in a test process that InOwnHome started, or "".
func OwnHome() string { return os.Getenv(ownHomeEnv) }

// InOwnHome runs this test binary again, with its arguments, in a mount
// namespace of its own where /etc/passwd gives root a fresh, empty home
// directory, and returns the run's exit code. ran is false, and nothing is
// done, in that run itself, when the tests do not run as root on Linux, and
// when the namespace cannot be made (a container without CAP_SYS_ADMIN, no
// unshare or mount program), which it then says on stderr.
//
// The device agents these tests start log in root with its own login shell,
// as OpenSSH would, and bash runs root's ~/.bashrc even for `ssh host cmd`.
// What is there belongs to the machine, not to the tests: a CI machine's
// pyenv rehashes on every shell start under a lock file, waits 60 s when the
// lock is held and prints to the command's output; and a test that hangs up a
// session while its shell is in there leaves the lock behind for every later
// one. With a home of their own, the tests' logins read no one's dotfiles and
// write nothing to root's home.
func InOwnHome() (code int, ran bool) {
	if os.Getenv(ownHomeEnv) != "" || runtime.GOOS != "linux" || os.Geteuid() != 0 {
		return 0, false
	}
	dir, err := os.MkdirTemp("", "porthole-test-home-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: logins keep root's home and its dotfiles: %v\n", err)
		return 0, false
	}
	defer os.RemoveAll(dir)
	home := filepath.Join(dir, "home")
	passwd, err := passwdWithHome("/etc/passwd", dir, home)
	if err == nil {
		err = probeBindMount(passwd)
	}
	var self string
	if err == nil {
		self, err = os.Executable()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: logins keep root's home and its dotfiles: %v\n", err)
		return 0, false
	}
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", `mount --bind "$0" /etc/passwd && exec "$@"`, passwd, self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), ownHomeEnv+"="+home)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// go test kills this process when its -timeout passes by far: the run
	// goes with it. go test's SIGQUIT before that (for the goroutines'
	// stacks: the run's are the ones that tell) goes on to the run, as do a
	// SIGTERM (timeout(1)), SIGINT (Ctrl-C) and SIGHUP, which end it and then
	// this process, which removes the home.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		return 1, true
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				cmd.Process.Signal(sig)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	signal.Stop(sigs)
	close(done)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, true
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			fmt.Fprintf(os.Stderr, "testenv: the tests ended by %v\n", ws.Signal())
			return 1, true
		}
		return exit.ExitCode(), true
	default:
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		return 1, true
	}
}

// passwdWithHome writes dir/passwd, the passwd file src with root's home (uid
// 0's) made home, which it makes an empty directory only root may enter.
func passwdWithHome(src, dir, home string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	if err := os.Mkdir(home, 0o700); err != nil {
		return "", err
	}
	lines := strings.Split(string(b), "\n")
	found := false
	for i, line := range lines {
		f := strings.Split(line, ":")
		if len(f) == 7 && f[2] == "0" {
			f[5], found = home, true
			lines[i] = strings.Join(f, ":")
		}
	}
	if !found {
		return "", fmt.Errorf("%s has no uid 0", src)
	}
	passwd := filepath.Join(dir, "passwd")
	return passwd, os.WriteFile(passwd, []byte(strings.Join(lines, "\n")), 0o644)
}

// probeBindMount checks, in a namespace that ends with it, that passwd can be
// bind-mounted over /etc/passwd.
func probeBindMount(passwd string) error {
	out, err := exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"mount", "--bind", passwd, "/etc/passwd").CombinedOutput()
	if err != nil {
		return fmt.Errorf("unshare --mount: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
