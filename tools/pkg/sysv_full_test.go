package pkg

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-iot/porthole/tools/internal/testenv"
)

// mountTmpfs mounts a tmpfs with flags and opts on dir, made if need be,
// until unmount or the test's end. It needs root; elsewhere the test is
// skipped, saying what is then not tested (untested), except under CI=true
// (CI runs as root, which may mount).
func mountTmpfs(t *testing.T, dir string, flags uintptr, opts, untested string) (unmount func()) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", flags, opts); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mounting a tmpfs on %s (%q): %v", dir, opts, err)
		}
		t.Skipf("cannot mount a tmpfs here (%v): %s is not tested", err, untested)
	}
	mounted := true
	unmount = func() {
		if mounted {
			syscall.Unmount(dir, syscall.MNT_DETACH)
			mounted = false
		}
	}
	t.Cleanup(unmount)
	return unmount
}

// fullTmpfs mounts a tmpfs with opts on dir, made if need be, for the test
// (mountTmpfs) and fills it: files of 1 MiB until one cannot be written or
// made. It returns them, to free it.
func fullTmpfs(t *testing.T, dir, opts string) (fillers []string) {
	t.Helper()
	mountTmpfs(t, dir, 0, opts, "a full file system")
	mib := make([]byte, 1<<20)
	for i := 0; ; i++ {
		name := filepath.Join(dir, "filler"+strconv.Itoa(i))
		f, err := os.Create(name)
		if err != nil {
			return fillers
		}
		fillers = append(fillers, name)
		_, err = f.Write(mib)
		f.Close()
		if err != nil {
			return fillers
		}
	}
}

// TestSysVStartPidFileNotWritable: with /var/run full, start-stop-daemon -m
// ran the agent and left its pid file empty (Debian's said "unable to close
// pidfile", BusyBox's nothing). start then said the agent had exited, status
// and stop that it was not running, and stop left it running; once there was
// room again, start started a second agent beside the one out of reach (the
// real one waits for data_dir's lock and exits 1), and no restart after an
// update replaced it. start must say why and start nothing, also when the
// file system fills between its check and the start; once there is room it
// starts one agent, which stop stops.
func TestSysVStartPidFileNotWritable(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		for _, tc := range []struct {
			name string
			// lateFill: the file system is full only after start's check,
			// once start has removed the pid file it wrote there.
			lateFill bool
			want     []string
		}{
			{"full", false, []string{"FAIL (cannot write the pid file ", ": No space left on device; nothing was started)"}},
			{"filled after the check", true, []string{"FAIL (the agent did not start; ", "cannot write the pid file "}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if tc.lateFill {
					// BusyBox's sh runs its own rm, never lateFill's:
					// dash runs the script, with BusyBox's
					// start-stop-daemon all the same.
					shell = "sh"
				}
				r := newSysVRig(t, fake, shell, binDir)
				run := filepath.Dir(r.pidfile)
				var fillers []string
				if tc.lateFill {
					fillers = lateFill(t, r, binDir, run)
				} else {
					fillers = fullTmpfs(t, run, "size=4k")
				}
				out, err := r.run("start")
				if err == nil || !strings.Contains(out, r.pidfile) {
					t.Errorf("start with %s full: %v %q; want a failure naming the pid file", run, err, out)
				}
				for _, want := range tc.want {
					if !strings.Contains(out, want) {
						t.Errorf("start with %s full: %q; want %q", run, out, want)
					}
				}
				if started := r.eventPidsWait("started", 1, time.Second); len(started) != 0 {
					t.Errorf("start with %s full: agents started %v, out of the script's reach (pid file %d); want none", run, started, r.pidFile())
				}
				r.wantStatus(3, "not running")

				for _, f := range fillers {
					os.Remove(f)
				}
				if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
					t.Errorf("start once there is room: %v %q, want OK", err, out)
				}
				started := r.eventPids("started", 1)
				if len(started) != 1 || r.pidFile() != started[0] {
					t.Errorf("start once there is room: agents started %v, pid file %d; want one, named", started, r.pidFile())
				}
				if out, err := r.run("stop"); err != nil || !strings.Contains(out, "OK") {
					t.Errorf("stop: %v %q, want OK", err, out)
				}
				for _, pid := range r.eventPids("started", 0) {
					if testenv.ProcessRunning(pid) {
						t.Errorf("after stop: agent %d still running", pid)
					}
				}
			})
		}
	})
}

// lateFill mounts a small tmpfs on run and puts an rm first on the script's
// PATH that, once start has removed the pid file it wrote there, fills it:
// the file system fills between start's check and the agent's start. It
// returns the file the rm fills it with.
func lateFill(t *testing.T, r *sysvRig, binDir, run string) []string {
	for _, f := range fullTmpfs(t, run, "size=4k") {
		os.Remove(f)
	}
	realRM := filepath.Join(binDir, "rm") // BusyBox's
	if binDir == "" {
		var err error
		if realRM, err = exec.LookPath("rm"); err != nil {
			t.Fatal(err)
		}
	}
	bin := t.TempDir()
	filler, done := filepath.Join(run, "filler"), filepath.Join(bin, "filled")
	script := "#!/bin/sh\n" + shq(realRM) + " \"$@\" || exit\n" +
		"case \"$*\" in *" + shq(r.pidfile) + ") [ -e " + shq(done) + " ] || { : >" + shq(done) +
		"; head -c 1048576 /dev/zero >" + shq(filler) + " 2>/dev/null; } ;; esac\n"
	if err := os.WriteFile(filepath.Join(bin, "rm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// The last PATH is the one the script gets.
	r.env = append(r.env, "PATH="+bin+string(os.PathListSeparator)+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return []string{filler}
}

// TestSysVStartLogNotWritable: with no free inode in /var/log, the shell that
// was to run the agent could not make the log its stderr goes to and exited,
// and start said "the agent exited; /var/log/porthole.log says why", a log
// that was not there. start must name the log and the cause, and start
// nothing; once there is room it starts the agent.
func TestSysVStartLogNotWritable(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newSysVRig(t, fake, shell, binDir)
		fillers := fullTmpfs(t, filepath.Dir(r.log), "size=64k,nr_inodes=2")
		out, err := r.run("start")
		want := "FAIL (cannot open the log " + r.log + ": No space left on device; nothing was started)"
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("start with no free inode for the log: %v %q; want exit 1 and %q", err, out, want)
		}
		if started := r.eventPidsWait("started", 1, time.Second); len(started) != 0 {
			t.Errorf("start with no free inode for the log: agents started %v; want none", started)
		}
		for _, f := range fillers {
			os.Remove(f)
		}
		if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
			t.Errorf("start once there is room: %v %q, want OK", err, out)
		}
		r.run("stop")
	})
}

// TestSysVLockNotWritable: with no free inode where the pid file goes, the
// lock could not be made, and every action took that for another run holding
// it: it waited STOP_TIMEOUT + 20 s (30 s) and then blamed a run with no pid.
// It must fail at once, saying why, and do nothing.
func TestSysVLockNotWritable(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newSysVRig(t, fake, shell, binDir)
		run := filepath.Dir(r.pidfile)
		fillers := fullTmpfs(t, run, "size=64k,nr_inodes=16")
		fillers = append(fillers, fillInodes(run)...)
		for _, action := range []string{"start", "stop", "restart"} {
			began := time.Now()
			out, err := r.run(action)
			if err == nil || !strings.Contains(out, "FAIL (cannot make the lock "+r.pidfile+".lock: No space left on device") || strings.Contains(out, "another run") {
				t.Errorf("%s with %s full: %v %q after %v; want a failure naming the lock and the cause", action, run, err, out, time.Since(began).Round(time.Second))
			}
		}
		if started := r.eventPidsWait("started", 1, time.Second); len(started) != 0 {
			t.Errorf("agents started %v with the lock not made; want none", started)
		}
		for _, f := range fillers {
			os.Remove(f)
		}
		r.wantStartStop("once there is room")
	})
}

// TestSysVStaleLockNotWritable: a lock left by a script that was killed
// (SIGKILL), on a file system then full or read-only. The takeover could not
// make its $LOCK.reap, took that for another run taking the lock over, waited
// STOP_TIMEOUT + 20 s (30 to 51 s) and then blamed the run that was gone. It
// must fail at once, saying why, and do nothing; once the file system takes
// writes again, the lock is taken over.
func TestSysVStaleLockNotWritable(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		for _, tc := range []struct {
			name     string
			readOnly bool // remounted read-only; else no inode is free
			// The reap link of a run killed taking the lock over is left
			// too. (On a full file system, removing it frees an inode.)
			reapLeft bool
			cause    string
		}{
			{"full", false, false, "No space left on device"},
			{"read-only", true, false, "Read-only file system"},
			{"read-only, reap link left", true, true, "Read-only file system"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := newSysVRig(t, fake, shell, binDir)
				run := filepath.Dir(r.pidfile)
				lock := r.pidfile + ".lock"
				fillers := fullTmpfs(t, run, "size=64k,nr_inodes=16")
				if err := os.Symlink("999999999 1", lock); err != nil {
					t.Fatal(err)
				}
				if tc.reapLeft {
					if err := os.Symlink("999999998 1", lock+".reap"); err != nil {
						t.Fatal(err)
					}
				}
				if tc.readOnly {
					if err := syscall.Mount("tmpfs", run, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
						t.Fatal(err)
					}
				} else {
					fillers = append(fillers, fillInodes(run)...)
				}
				want := "FAIL (cannot take over the lock " + lock + " of pid 999999999, which is gone: " + tc.cause + "; nothing was done)"
				for _, action := range []string{"start", "stop"} {
					began := time.Now()
					out, err := r.run(action)
					took := time.Since(began)
					if err == nil || !strings.Contains(out, want) || strings.Contains(out, "another run") || took > 5*time.Second {
						t.Errorf("%s with a gone run's lock, %s: %v %q after %v; want a failure at once and %q", action, tc.name, err, out, took.Round(time.Millisecond), want)
					}
				}
				if started := r.eventPidsWait("started", 1, time.Second); len(started) != 0 {
					t.Errorf("agents started %v with the lock not taken; want none", started)
				}

				if tc.readOnly {
					if err := syscall.Mount("tmpfs", run, "tmpfs", syscall.MS_REMOUNT, ""); err != nil {
						t.Fatal(err)
					}
				}
				for _, f := range fillers {
					os.Remove(f)
				}
				r.wantStartStop("once the file system takes writes")
				for _, name := range []string{lock, lock + ".reap"} {
					if _, err := os.Lstat(name); err == nil {
						t.Errorf("after stop: %s is left", name)
					}
				}
			})
		}
	})
}

// fillInodes makes empty files in dir until no more can be made (its file
// system has no inode free), and returns them.
func fillInodes(dir string) (files []string) {
	for i := 0; ; i++ {
		name := filepath.Join(dir, "inode"+strconv.Itoa(i))
		f, err := os.Create(name)
		if err != nil {
			return files
		}
		f.Close()
		files = append(files, name)
	}
}

// wantStartStop wants start, then stop, to say OK; when says in what state.
func (r *sysvRig) wantStartStop(when string) {
	r.t.Helper()
	if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
		r.t.Errorf("start %s: %v %q, want OK", when, err, out)
	}
	if out, err := r.run("stop"); err != nil || !strings.Contains(out, "OK") {
		r.t.Errorf("stop %s: %v %q, want OK", when, err, out)
	}
}

// TestSysVRestartLogNotWritable: restart checks the config before it stops
// the agent, but start opened the log only after the stop. With the log's
// file system read-only (remounted so after an I/O error, while /var/run, a
// tmpfs, still takes writes), restart stopped the agent and start then
// refused to start one ("cannot open the log ...; nothing was started"): the
// device was left with no agent, and no login through it. restart must fail
// before it stops anything, naming the log and the cause.
func TestSysVRestartLogNotWritable(t *testing.T) {
	fake := goProgram(t, "porthole", fakeAgent, runtime.GOARCH)
	withEachStartStopDaemon(t, func(t *testing.T, shell, binDir string) {
		r := newSysVRig(t, fake, shell, binDir)
		if out, err := r.run("start"); err != nil || !strings.Contains(out, "OK") {
			t.Fatalf("start: %v %q, want OK", err, out)
		}
		agent := r.pidFile()
		// A read-only file system over the log's directory: the running
		// agent keeps the log it has open, a new open fails.
		unmount := mountTmpfs(t, filepath.Dir(r.log), syscall.MS_RDONLY, "", "a read-only log")
		out, err := r.run("restart")
		want := "FAIL (cannot open the log " + r.log + ": Read-only file system; nothing was stopped)"
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("restart with the log's file system read-only: %v %q; want exit 1 and %q", err, out, want)
		}
		if !testenv.ProcessRunning(agent) || r.pidFile() != agent {
			t.Errorf("restart with the log's file system read-only: agent %d alive %v, pid file %d; want it left running, named", agent, testenv.ProcessRunning(agent), r.pidFile())
		}
		unmount()
		if out, err := r.run("restart"); err != nil || !strings.Contains(out, "OK") {
			t.Errorf("restart once the log takes writes: %v %q, want OK", err, out)
		}
		if pid := r.pidFile(); pid == agent || !testenv.ProcessRunning(pid) {
			t.Errorf("restart once the log takes writes: pid file %d (was %d), want a new agent running", pid, agent)
		}
		r.run("stop")
	})
}
