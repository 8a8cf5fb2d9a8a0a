package sshd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The legacy scp protocol (OpenSSH scp.c, "scp -O"): the client runs
// "scp -t TARGET" (sink: we receive) or "scp -f PATH..." (source: we send)
// on the server and both sides exchange control lines and file data:
//
//	C<mode> <size> <name>\n  a file follows (size bytes, then a status byte)
//	D<mode> 0 <name>\n       a directory follows, up to the matching E
//	E\n                      end of directory
//	T<mtime> 0 <atime> 0\n   times for the next C or D (with -p)
//	\x01<message>\n          warning; \x02<message>\n fatal error
//
// Every control line and file is answered with \0 (ok) or \x01/\x02 and a
// message.

// scpOptions is the parsed "scp -t/-f" command line.
type scpOptions struct {
	Sink      bool // -t
	Source    bool // -f
	Recursive bool // -r
	Preserve  bool // -p
	TargetDir bool // -d: the sink's target must be a directory
	Paths     []string
	// Patterns has one entry per path: the pattern of a path with an
	// unquoted *, ? or [ (shellWord.Pattern: its quoted and escaped
	// metacharacters escaped with \), or "" for a path that is not a
	// pattern. They are expanded (shellGlob) as the remote shell would
	// expand them for OpenSSH's scp: the source's paths and the sink's
	// target. A bracket expression the shells differ on is refused
	// (checkGlob).
	Patterns []string
}

// parseSCPCommand recognises a remote scp invocation, expanding it as
// splitShellWords does with expand. ok is false when the command is not
// "scp" with -t or -f (it then runs through the shell like any command); err
// is set for an scp -t/-f line this server cannot serve.
func parseSCPCommand(cmdline string, expand func(string) (string, bool)) (o scpOptions, ok bool, err error) {
	words, serr := splitShellWords(cmdline, expand)
	if len(words) == 0 || path.Base(words[0].Text) != "scp" {
		return o, false, nil
	}
	i := 1
	var unknown string
	for ; i < len(words); i++ {
		a := words[i].Text
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		for _, c := range a[1:] {
			switch c {
			case 't':
				o.Sink = true
			case 'f':
				o.Source = true
			case 'r':
				o.Recursive = true
			case 'p':
				o.Preserve = true
			case 'd':
				o.TargetDir = true
			case 'v', 'q', 'E':
			default:
				unknown += string(c)
			}
		}
	}
	for _, w := range words[i:] {
		o.Paths = append(o.Paths, w.Text)
		pat := ""
		if w.Glob {
			pat = w.Pattern
		}
		o.Patterns = append(o.Patterns, pat)
	}
	if !o.Sink && !o.Source {
		return o, false, nil
	}
	switch {
	case serr != nil:
		return o, true, wrapErr("scp", serr)
	case unknown != "":
		return o, true, errors.New("scp: unsupported option -" + unknown)
	case o.Sink && o.Source:
		return o, true, errors.New("scp: -t and -f together")
	case o.Sink && len(o.Paths) != 1:
		return o, true, fmt.Errorf("scp -t: want one target, got %d", len(o.Paths))
	case o.Source && len(o.Paths) == 0:
		return o, true, errors.New("scp -f: no paths")
	}
	for _, pat := range o.Patterns {
		if err := checkGlob(pat); err != nil {
			return o, true, wrapErr("scp", err)
		}
	}
	return o, true, nil
}

// scpMsg is one parsed control line.
type scpMsg struct {
	_     [0]func() // not comparable: no equality function in the binary (docs/size.md)
	Type  byte      // 'C', 'D', 'E', 'T', 1 (warning) or 2 (fatal)
	Mode  uint32
	Size  int64
	Name  string
	Mtime int64
	Atime int64
	Text  string // message of a warning or error
}

// maxSCPLine bounds a control line (a name of up to PATH_MAX plus fields).
const maxSCPLine = 8192

// parseSCPControl parses one control line without its trailing newline.
func parseSCPControl(line string) (m scpMsg, err error) {
	if line == "" {
		return m, errors.New("scp: empty control line")
	}
	m.Type = line[0]
	rest := line[1:]
	// One error return for every bad line below (strconv.Quote is %q): an
	// fmt.Errorf at each return was code of its own.
	bad, quoted := "unknown control line ", line
parse:
	switch m.Type {
	case 1, 2:
		m.Text = rest
		return m, nil
	case 'E':
		if rest == "" {
			return m, nil
		}
		bad = "bad E line "
	case 'T':
		bad = "bad T line "
		f := strings.Split(rest, " ")
		if len(f) != 4 {
			break
		}
		var nums [4]int64
		for i, s := range f {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 || (i%2 == 1 && n > 999999) {
				break parse
			}
			nums[i] = n
		}
		m.Mtime, m.Atime = nums[0], nums[2]
		return m, nil
	case 'C', 'D':
		f := strings.SplitN(rest, " ", 3)
		if len(f) != 3 || len(f[0]) != 4 {
			bad = "bad " + line[:1] + " line "
			break
		}
		mode, err := strconv.ParseUint(f[0], 8, 32)
		if err != nil || mode > 0o7777 {
			bad = "bad mode in "
			break
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || size < 0 || (len(f[1]) > 1 && f[1][0] == '+') {
			bad = "bad size in "
			break
		}
		name := f[2]
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			bad, quoted = "unexpected file name ", name
			break
		}
		m.Mode, m.Size, m.Name = uint32(mode), size, name
		return m, nil
	}
	return m, errors.New("scp: " + bad + strconv.Quote(quoted))
}

// fileMode converts Unix permission bits to an os.FileMode.
func fileMode(m uint32) os.FileMode {
	fm := os.FileMode(m & 0o777)
	if m&syscall.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	if m&syscall.S_ISVTX != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// unixMode converts an os.FileMode to the bits scp sends: the permission
// and set-id bits, not the sticky bit (OpenSSH's FILEMODEMASK), which a
// client with -p would otherwise set on what it makes.
func unixMode(fm os.FileMode) uint32 {
	m := uint32(fm.Perm())
	if fm&os.ModeSetuid != 0 {
		m |= syscall.S_ISUID
	}
	if fm&os.ModeSetgid != 0 {
		m |= syscall.S_ISGID
	}
	return m
}

// scp is one in-process scp run over a session's stdin and stdout.
type scp struct {
	r    *bufio.Reader
	w    io.Writer
	opts scpOptions
	errs int // non-fatal errors: the exit status is 1 if any
}

var errSCPFatal error = &errorString{"scp: fatal error"}

// runSCP serves "scp -t" or "scp -f" and returns the exit status. A command
// line parseSCPCommand refused (perr) gets its error as a fatal one, which
// OpenSSH's scp prints whichever way it copies.
func (sess *session) runSCP(a *account, opts scpOptions, perr error) int {
	c := &scp{r: bufio.NewReader(sess.reader()), w: sess.writer(sess.ch), opts: opts}
	if perr != nil {
		// The client is told why; the log is not, as the error quotes the
		// command line, whose arguments are never logged (commandName).
		c.fatal(strings.TrimPrefix(perr.Error(), "scp: "))
		sess.srv.log().Info("scp command line refused", "remote", sess.st.remote)
		return 1
	}
	// A write to a FIFO no program reads blocks for good; see abandonable.
	return sess.abandonable("scp: a read or write", nil, func() int {
		status, err := c.run(workDir(a))
		if err != nil {
			// It may quote what the peer sent (its own errors, a bad line).
			sess.srv.log().Info("scp", "remote", sess.st.remote, "error", clipClient(err.Error()))
		}
		return status
	})
}

// run serves the command, with relative paths taken from dir, and returns
// the exit status and the error that ended it early.
func (c *scp) run(dir string) (int, error) {
	var err error
	if c.opts.Sink {
		target := resolvePath(dir, c.opts.Paths[0])
		if len(c.opts.Patterns) > 0 && c.opts.Patterns[0] != "" {
			// The shell expands a pattern in the target too: one match is
			// the target, several are OpenSSH's "ambiguous target".
			var ok bool
			if target, ok = c.globTarget(dir, target); !ok {
				return 1, c.fatal("ambiguous target")
			}
		}
		err = c.sink(target)
	} else {
		var srcs []scpSource
		for i, p := range c.opts.Paths {
			s := scpSource{path: resolvePath(dir, p)}
			if i < len(c.opts.Patterns) && c.opts.Patterns[i] != "" {
				s.pattern = resolvePath(escapeGlob(dir), c.opts.Patterns[i])
			}
			srcs = append(srcs, s)
		}
		err = c.source(srcs)
	}
	if err != nil || c.errs > 0 {
		return 1, err
	}
	return 0, nil
}

// globTarget expands the sink's target pattern as the shell would: target
// (resolvePath's) is kept when nothing matches; ok is false when several
// names do. A trailing "/" matches directories only and is kept.
func (c *scp) globTarget(dir, target string) (string, bool) {
	pat := resolvePath(escapeGlob(dir), c.opts.Patterns[0])
	slash := strings.HasSuffix(target, "/")
	var matches []string
	for _, m := range shellGlob(pat) {
		if fi, err := os.Stat(m); !slash || err == nil && fi.IsDir() {
			matches = append(matches, m)
		}
	}
	switch {
	case len(matches) == 0:
		return target, true
	case len(matches) > 1:
		return "", false
	case slash && !strings.HasSuffix(matches[0], "/"):
		return matches[0] + "/", true
	}
	return matches[0], true
}

func (c *scp) ok() error {
	_, err := c.w.Write([]byte{0})
	return err
}

// warn sends a non-fatal error to the peer: "name: reason". Strings, not a
// format and its arguments: each caller's fmt arguments were code of its own.
func (c *scp) warn(name, reason string) error {
	c.errs++
	msg := strings.ReplaceAll(name+": "+reason, "\n", " ")
	_, err := io.WriteString(c.w, "\x01scp: "+msg+"\n")
	return err
}

// fatal sends a fatal error to the peer and returns errSCPFatal.
func (c *scp) fatal(msg string) error {
	msg = strings.ReplaceAll(msg, "\n", " ")
	io.WriteString(c.w, "\x02scp: "+msg+"\n")
	return fmt.Errorf("%w: %s", errSCPFatal, msg)
}

// readLine reads one control line without its newline; io.EOF only at a
// line boundary.
func (c *scp) readLine() (string, error) {
	var b strings.Builder
	for {
		ch, err := c.r.ReadByte()
		if err != nil {
			if err == io.EOF && b.Len() > 0 {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		if ch == '\n' {
			return b.String(), nil
		}
		if b.Len() >= maxSCPLine {
			return "", errors.New("scp: control line too long")
		}
		b.WriteByte(ch)
	}
}

// readAck reads the peer's answer: nil for \0, a warning error (counted)
// for \x01, errSCPFatal for \x02.
func (c *scp) readAck() error {
	b, err := c.r.ReadByte()
	if err != nil {
		return err
	}
	switch b {
	case 0:
		return nil
	case 1, 2:
		msg, err := c.readLine()
		if err != nil {
			return err
		}
		if b == 2 {
			return fmt.Errorf("%w: peer: %s", errSCPFatal, msg)
		}
		c.errs++
		return errors.New("peer: " + msg)
	}
	return fmt.Errorf("%w: unexpected answer byte %#x", errSCPFatal, b)
}

// sink receives into target.
func (c *scp) sink(target string) error {
	fi, err := os.Stat(target)
	isDir := err == nil && fi.IsDir()
	if c.opts.TargetDir && !isDir {
		if err == nil {
			err = syscall.ENOTDIR
		}
		c.fatal(target + ": " + strerror(err))
		// The log is not told the target: an argument of the command line,
		// which is never logged (commandName).
		return fmt.Errorf("%w: the target: %s", errSCPFatal, strerror(err))
	}
	if err := c.ok(); err != nil {
		return err
	}
	return c.sinkLoop(target, isDir, 0)
}

func (c *scp) sinkLoop(targ string, targIsDir bool, depth int) error {
	var times *scpMsg
	for {
		line, err := c.readLine()
		if err == io.EOF {
			if depth > 0 {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		if err != nil {
			return err
		}
		m, err := parseSCPControl(line)
		if err != nil {
			return c.fatal(strings.TrimPrefix(err.Error(), "scp: "))
		}
		switch m.Type {
		case 1:
			c.errs++
			continue
		case 2:
			return fmt.Errorf("%w: peer: %s", errSCPFatal, m.Text)
		case 'E':
			if depth == 0 {
				return c.fatal("unexpected E line")
			}
			return c.ok()
		case 'T':
			times = &m
			if err := c.ok(); err != nil {
				return err
			}
			continue
		}
		np := targ
		if targIsDir {
			np = resolvePath(targ, m.Name)
		}
		t := times
		times = nil
		if m.Type == 'D' {
			if err := c.sinkDir(np, m, t, depth); err != nil {
				return err
			}
			continue
		}
		if err := c.sinkFile(np, m, t); err != nil {
			return err
		}
	}
}

// sinkDir receives a directory as OpenSSH's scp -t does: an existing one
// is used as it is (chmod'ed to the source's mode only with -p); a new one
// is made with u+rwx added, so that even a read-only source's contents can
// be written into it, and given its mode once they are: the source's with
// -p, else less the umask's bits (see umasked).
func (c *scp) sinkDir(np string, m scpMsg, t *scpMsg, depth int) error {
	if !c.opts.Recursive {
		return c.fatal("received directory without -r")
	}
	mode := fileMode(m.Mode)
	setMode := c.opts.Preserve
	if fi, err := os.Stat(np); err == nil {
		if !fi.IsDir() {
			return c.warn(np, strerror(syscall.ENOTDIR))
		}
		if c.opts.Preserve {
			os.Chmod(np, mode)
		}
	} else {
		if err := os.Mkdir(np, fileMode(m.Mode&0o777)|0o700); err != nil {
			return c.warn(np, strerror(err))
		}
		if !c.opts.Preserve {
			fi, err := os.Stat(np)
			if err != nil {
				return c.warn(np, strerror(err))
			}
			mode = umasked(m.Mode, fi.Mode())
		}
		setMode = true
	}
	if err := c.ok(); err != nil {
		return err
	}
	if err := c.sinkLoop(np, true, depth+1); err != nil {
		return err
	}
	// As OpenSSH, times from a T line are set with or without -p.
	if t != nil {
		scpTimes(np, t)
	}
	if setMode {
		os.Chmod(np, mode)
	}
	return nil
}

// umasked returns the permission bits of mode (from a C or D line) that the
// umask lets through: what OpenSSH's scp -t gives a file or directory it
// creates without -p (mode & ~umask; it drops the set-id and sticky bits
// too, by adding 07000 to its mask). created is the mode of the inode just
// made for it with mode's permissions plus u+w or u+rwx: the kernel masked
// those with the process umask, the one a spawned scp -t would inherit
// (sessions get no umask of their own), so the umask's bits are read off
// the inode. Reading the umask itself is racy (syscall.Umask reads it only
// by setting it, for every goroutine at once) or needs Linux 4.7 (the
// Umask line of /proc/self/status).
func umasked(mode uint32, created os.FileMode) os.FileMode {
	return fileMode(mode&0o777) & created.Perm()
}

// scpSinkBuf is the size of the buffers scp -t writes a file in: OpenSSH's
// COPY_BUFLEN, which its scp -t uses where st_blksize is at most that (ext4,
// tmpfs, UBIFS, JFFS2).
const scpSinkBuf = 16 * 1024

// sinkFile receives a file as OpenSSH's scp -t does: it is made with the
// source's permissions plus u+w (so that it can be written) under the
// umask, and a new one then loses the u+w again if the source had none;
// an existing file keeps its mode. With -p the file gets exactly the
// source's mode, set-id bits included.
//
// As OpenSSH's scp -t, an existing file is opened without O_TRUNC, written
// over in whole buffers of scpSinkBuf bytes, and cut to the size sent only
// once the whole file has arrived: an upload cut short (a dropped tunnel,
// ^C) leaves the old content past the whole buffers written, so that a
// failed upload of authorized_keys does not leave it empty. After a failed
// write nothing is cut either (OpenSSH's wrerr): the file holds the bytes
// written so far over the old content.
func (c *scp) sinkFile(np string, m scpMsg, t *scpMsg) error {
	_, err := os.Stat(np)
	exists := err == nil
	// O_NONBLOCK: onto a FIFO that no program reads, open(2) would block
	// for ever in this in-process scp, keeping the session and the
	// connection after the client has gone; it fails instead (ENXIO). For
	// a regular file the flag changes nothing. O_NOCTTY: a terminal as the
	// target must not become the server's controlling terminal.
	f, err := os.OpenFile(np, os.O_WRONLY|os.O_CREATE|syscall.O_NONBLOCK|syscall.O_NOCTTY, fileMode(m.Mode&0o777)|0o200)
	if err != nil {
		// The source skips the data after an error answer.
		return c.warn(np, strerror(err))
	}
	if err := c.ok(); err != nil {
		f.Close()
		return err
	}
	// Keep reading the whole file even after a write error, to stay in step.
	// A buffer is written only once full (or at the end of the file): a
	// source gone midway leaves the last part unwritten, as OpenSSH does.
	var werr error
	buf := make([]byte, scpSinkBuf)
	for left := m.Size; left > 0; {
		n, err := io.ReadFull(c.r, buf[:min(int64(len(buf)), left)])
		if err != nil {
			f.Close()
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if werr == nil {
			_, werr = f.Write(buf[:n])
		}
		left -= int64(n)
	}
	if werr == nil {
		// Cut what is left of a longer old file; not a FIFO or a device,
		// which cannot be (OpenSSH's S_ISREG check).
		var fi os.FileInfo
		if fi, werr = f.Stat(); werr == nil && fi.Mode().IsRegular() {
			werr = f.Truncate(m.Size)
		}
	}
	if werr == nil {
		switch {
		case c.opts.Preserve:
			werr = f.Chmod(fileMode(m.Mode))
		case !exists && m.Mode&0o200 == 0:
			var fi os.FileInfo
			if fi, werr = f.Stat(); werr == nil {
				werr = f.Chmod(umasked(m.Mode, fi.Mode()))
			}
		}
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	// As OpenSSH, times from a T line are set with or without -p.
	if t != nil && werr == nil {
		werr = scpTimes(np, t)
	}
	// The source's status byte for the file data. A warning (the source
	// could not read the whole file and padded it) is still answered, as
	// OpenSSH's scp -t does: the source waits for that answer.
	if _, err := c.answer(); err != nil {
		return err
	}
	if werr != nil {
		return c.warn(np, strerror(werr))
	}
	return c.ok()
}

// setTimes sets the access and modification times of p, in seconds: for a
// T line of scp -t and for SFTP's (F)SETSTAT on 32-bit devices (setAttrs).
// Not with os.Chtimes, which passes them in nanoseconds in an int64, so that
// a time after 2262 wraps to some other (in 1901 on tmpfs), and on a 32-bit
// device a 32-bit time_t, which wraps one after 2038. Such a time is set with
// utimensat_time64 there, as OpenSSH's scp -t and sftp-server set it with a
// 64-bit time_t (musl 1.2, glibc 2.34); a kernel without that call (before
// 5.1) cannot hold it: EOVERFLOW.
func setTimes(p string, atime, mtime int64) error {
	at, aerr := unix.TimeToTimespec(time.Unix(atime, 0))
	mt, merr := unix.TimeToTimespec(time.Unix(mtime, 0))
	if aerr == nil && merr == nil {
		return unix.UtimesNano(p, []unix.Timespec{at, mt})
	}
	if err := utimesTime64(p, atime, mtime); err != unix.ENOSYS {
		return err
	}
	return syscall.EOVERFLOW
}

// scpTimes sets the times of a T line on p. A time the kernel cannot hold is
// left unset, as OpenSSH's scp -t leaves it with a 32-bit time_t.
func scpTimes(p string, t *scpMsg) error {
	if err := setTimes(p, t.Atime, t.Mtime); err != syscall.EOVERFLOW {
		return err
	}
	return nil
}

// strerror words err as C's strerror does, as OpenSSH's scp reports it ("No
// such file or directory"): Go's texts for errno values are glibc's with a
// lower-case first letter.
func strerror(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if s := errno.Error(); s != "" {
			return strings.ToUpper(s[:1]) + s[1:]
		}
	}
	return unwrapPathErr(err).Error()
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// scpSource is one path the source sends: pattern, when set, is expanded
// as the remote shell would (path is used when nothing matches).
type scpSource struct {
	_       [0]func() // not comparable: no equality function in the binary (docs/size.md)
	path    string
	pattern string
}

// source sends srcs.
func (c *scp) source(srcs []scpSource) error {
	if err := c.readAck(); err != nil {
		return err
	}
	for _, s := range srcs {
		matches := []string{s.path}
		if s.pattern != "" {
			if m := shellGlob(s.pattern); len(m) > 0 {
				matches = m
			}
		}
		for _, m := range matches {
			// OpenSSH's scp -f strips a path's trailing slashes before it
			// opens it (source() in scp.c): "file/" sends the file, where
			// stat(2) says ENOTDIR, and messages name "dir", not "dir/".
			for len(m) > 1 && m[len(m)-1] == '/' {
				m = m[:len(m)-1]
			}
			if err := c.send(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// answer turns the peer's reply into: nil (go on), skip (warning) or a
// fatal error.
func (c *scp) answer() (skip bool, err error) {
	if err := c.readAck(); err != nil {
		if errors.Is(err, errSCPFatal) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return false, err
		}
		return true, nil
	}
	return false, nil
}

// sendTimes sends, with -p, the T line of times fileTimes read, and reads
// the answer.
func (c *scp) sendTimes(mtime, atime int64) (bool, error) {
	if !c.opts.Preserve {
		return false, nil
	}
	// Times before 1970 are sent as 0, as OpenSSH does: the T line has
	// no sign, and a client takes a "-" for a protocol error and stops.
	if _, err := fmt.Fprintf(c.w, "T%d 0 %d 0\n", max(mtime, 0), max(atime, 0)); err != nil {
		return false, err
	}
	return c.answer()
}

// fileTimes returns the modification and access times of the open file f
// (fi, from fstat(2)), in seconds: statxTimes', else stat's.
func fileTimes(f *os.File, fi os.FileInfo) (mtime, atime int64) {
	if mtime, atime, ok := statxTimes(int(f.Fd()), "", unix.AT_EMPTY_PATH); ok {
		return mtime, atime
	}
	mtime, atime = fi.ModTime().Unix(), fi.ModTime().Unix()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		atime = int64(st.Atim.Sec)
	}
	return mtime, atime
}

// statxTimes returns the modification and access times of name in dirfd
// (flags as statx(2)'s), in seconds, from statx(2), as OpenSSH's libc takes
// them where stat's cannot hold them: on 32-bit arm, mips and 386, Go's
// stat64 times are 32-bit signed (a file of 2040 read as 1904); on mips64 the
// kernel's struct stat has unsigned 32-bit times (a file of 1969 read as
// 2106). ok is false without statx (Linux before 4.11, a seccomp filter):
// stat's times are all there is then.
func statxTimes(dirfd int, name string, flags int) (mtime, atime int64, ok bool) {
	const want = unix.STATX_ATIME | unix.STATX_MTIME
	var stx unix.Statx_t
	if unix.Statx(dirfd, name, flags, want, &stx) != nil || stx.Mask&want != want {
		return 0, 0, false
	}
	return stx.Mtime.Sec, stx.Atime.Sec, true
}

// send sends the file or, with -r, the directory p. What is sent is what
// was opened, checked with fstat(2) (see openRegular): a FIFO put at p
// between the stat and the open would otherwise have held the session in
// open(2) until a writer came, as OpenSSH's scp avoids with the same
// O_NONBLOCK open; a device or socket is refused before it is opened.
func (c *scp) send(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return c.warn(p, strerror(err))
	}
	name := visNewline(filepath.Base(p))
	if fi.IsDir() {
		if !c.opts.Recursive {
			return c.warn(p, "not a regular file")
		}
		return c.sendDir(p, name)
	}
	f, fi, err := openRegular(p)
	if errors.Is(err, errNotRegular) {
		return c.warn(p, "not a regular file")
	} else if err != nil {
		return c.warn(p, strerror(err))
	}
	defer f.Close()
	if skip, err := c.sendTimes(fileTimes(f, fi)); skip || err != nil {
		return err
	}
	size := fi.Size()
	if _, err := fmt.Fprintf(c.w, "C%04o %d %s\n", unixMode(fi.Mode()), size, name); err != nil {
		return err
	}
	if skip, err := c.answer(); skip || err != nil {
		return err
	}
	n, rerr := io.CopyN(c.w, f, size)
	if rerr != nil && n < size {
		// The file shrank or could not be read: pad to the announced size
		// to stay in step, then report the error instead of success.
		if _, err := io.CopyN(c.w, &zeroReader{}, size-n); err != nil {
			return err
		}
		if rerr == io.EOF {
			// What OpenSSH's scp says of a file that gave less than its
			// size (atomicio's EPIPE), rather than a bare "EOF".
			rerr = syscall.EPIPE
		}
		if err := c.warn(p, strerror(rerr)); err != nil {
			return err
		}
	} else if err := c.ok(); err != nil {
		return err
	}
	_, err = c.answer()
	return err
}

// sendDir sends the directory p and, one by one, what is in it. The
// directory is opened with O_DIRECTORY, so what was stat'ed as one and
// replaced since is refused, and closed before its entries are sent: a deep
// tree holds one descriptor at a time. Its times are read before it is
// listed, as OpenSSH's scp -f reads them (with fstat(2) in source(), before
// rsource() reads the directory): the listing updates the access time.
func (c *scp) sendDir(p, name string) error {
	d, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return c.warn(p, strerror(err))
	}
	fi, err := d.Stat()
	var entries []os.DirEntry
	var mtime, atime int64
	if err == nil {
		mtime, atime = fileTimes(d, fi)
		entries, err = d.ReadDir(-1)
	}
	d.Close()
	if err != nil {
		return c.warn(p, strerror(err))
	}
	skip, err := c.sendTimes(mtime, atime)
	if skip || err != nil {
		return err
	}
	if _, err := fmt.Fprintf(c.w, "D%04o 0 %s\n", unixMode(fi.Mode()), name); err != nil {
		return err
	}
	if skip, err := c.answer(); skip || err != nil {
		return err
	}
	slices.SortFunc(entries, func(a, b os.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	for _, e := range entries {
		if err := c.send(resolvePath(p, e.Name())); err != nil {
			return err
		}
	}
	if _, err := io.WriteString(c.w, "E\n"); err != nil {
		return err
	}
	_, err = c.answer()
	return err
}

// visNewline returns a name that contains a newline as OpenSSH's scp sends
// it (source(): strnvis(3) with VIS_NL): the newline, the other control
// characters and every byte past ASCII as \^J, \M-x, \M^x or \240, and a
// backslash doubled, so that the file is copied under that name rather than
// left out (PuTTY's pscp stops the whole download at a left-out one). Other
// names are returned as they are.
func visNewline(name string) string {
	if !strings.Contains(name, "\n") {
		return name
	}
	var b strings.Builder
	for _, c := range []byte(name) {
		switch {
		case c == '\\':
			b.WriteString(`\\`)
		case c >= ' ' && c < 0x7f || c == '\t':
			b.WriteByte(c)
		case c == 0x80|' ':
			b.WriteString(`\240`)
		default:
			b.WriteByte('\\')
			if c >= 0x80 {
				b.WriteByte('M')
				c &= 0x7f
			}
			if c < ' ' || c == 0x7f {
				b.WriteByte('^')
				b.WriteByte((c + '@') & 0x7f) // DEL is \^?
			} else {
				b.WriteByte('-')
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

type zeroReader struct{}

func (*zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}
