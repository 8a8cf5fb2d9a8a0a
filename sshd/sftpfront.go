package sshd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// SFTP version 3 (draft-ietf-secsh-filexfer-02) numbers used here.
const (
	sftpOpen     = 3   // SSH_FXP_OPEN
	sftpClose    = 4   // SSH_FXP_CLOSE
	sftpRead     = 5   // SSH_FXP_READ
	sftpWrite    = 6   // SSH_FXP_WRITE
	sftpOpendir  = 11  // SSH_FXP_OPENDIR
	sftpReaddir  = 12  // SSH_FXP_READDIR
	sftpRemove   = 13  // SSH_FXP_REMOVE
	sftpMkdir    = 14  // SSH_FXP_MKDIR
	sftpRmdir    = 15  // SSH_FXP_RMDIR
	sftpRealpath = 16  // SSH_FXP_REALPATH
	sftpRename   = 18  // SSH_FXP_RENAME
	sftpSymlink  = 20  // SSH_FXP_SYMLINK
	sftpStatus   = 101 // SSH_FXP_STATUS
	sftpHandle   = 102 // SSH_FXP_HANDLE
	sftpName     = 104 // SSH_FXP_NAME
	sftpAttrs    = 105 // SSH_FXP_ATTRS
	sftpVersion  = 2   // SSH_FXP_VERSION
	sftpExt      = 200 // SSH_FXP_EXTENDED

	sftpOK               = 0 // SSH_FX_OK
	sftpEOF              = 1 // SSH_FX_EOF
	sftpNoSuchFile       = 2 // SSH_FX_NO_SUCH_FILE
	sftpPermissionDenied = 3 // SSH_FX_PERMISSION_DENIED
	sftpFailure          = 4 // SSH_FX_FAILURE
	sftpBadMessage       = 5 // SSH_FX_BAD_MESSAGE
	sftpOpUnsupported    = 8 // SSH_FX_OP_UNSUPPORTED
)

// The requests with a path that pkg/sftp serves (see kernelPath), and STAT
// and LSTAT, served here (see stat).
const (
	sftpLstat    = 7  // SSH_FXP_LSTAT
	sftpSetstat  = 9  // SSH_FXP_SETSTAT
	sftpFstat    = 8  // SSH_FXP_FSTAT
	sftpFsetstat = 10 // SSH_FXP_FSETSTAT
	sftpStat     = 17 // SSH_FXP_STAT
	sftpReadlink = 19 // SSH_FXP_READLINK
)

// errSFTPClosed is returned to pkg/sftp's reader when the SFTP session was
// closed while a request served here waited for the requests before it.
var errSFTPClosed error = &errorString{"sshd: sftp session closed"}

// sftpFront sits between the session channel and pkg/sftp and serves
// some requests itself: directory listings (see sftpdir.go), REMOVE, RMDIR
// and RENAME (see removeAndRename), MKDIR (see attrsPerm), REALPATH (see
// realpath) and SSH_FXP_SYMLINK. pkg/sftp, given a working directory, makes both
// of the request's paths absolute, so a relative target ("symlink
// renamed.bin link.bin" after "cd dir") became a link to a file in the
// home directory. OpenSSH's sftp-server stores the target exactly as sent,
// relative or absolute, and so does this; only the link's own path is
// resolved against the working directory. As in OpenSSH's sftp and
// sftp-server (PROTOCOL section 4.1) and pkg/sftp, the target comes first.
//
// To keep requests in order, a request served here is answered once pkg/sftp
// has answered every request before it (pkg/sftp answers each request
// exactly once, in order); pkg/sftp then writes nothing until it gets the
// next request, so the reply cannot land inside one of its packets.
//
// It also hands pkg/sftp one WRITE at a time: the next once every request
// before it has been answered, and any request after a WRITE once that WRITE
// has been; only READs that follow one another run together (see Read).
// pkg/sftp runs reads and writes on 8 workers, so the pipelined
// writes of an upload ran out of order, and when one failed (a full disk) writes
// at later offsets already queued still landed, leaving a file longer than what
// was written, with a hole. sftp's reput and put -a resume from the remote size
// and trust what is before it, so they then built a corrupt file and reported
// success. In order, as OpenSSH's sftp-server runs them, a failed upload leaves
// a clean prefix. (pkg/sftp's worker count is a constant.) The writes go to the
// page cache, far faster than the SSH cipher delivers them.
type sftpFront struct {
	r       *bufio.Reader // the channel's data, sftpPeekSize at a time
	w       io.Writer     // the channel
	workDir string
	// homeOf is the home directory of a user, for expand-path@openssh.com's
	// ~user.
	homeOf func(user string) (string, bool)
	srv    *Server // for the names of owners and groups in listings, and the log; nil: numbers, no log
	remote string  // the client, for log lines
	// versioned: pkg/sftp's SSH_FXP_VERSION has gone out, with
	// sftpExtensions added to its extensions.
	versioned bool

	// Only pkg/sftp's reading goroutine touches left and pending.
	left int64 // bytes of the packet being passed to pkg/sftp that it has yet to read
	// pending, when not nil, is the rest of that packet, rewritten (see
	// kernelPath): it is read from here and not from r.
	pending []byte

	// pkg/sftp serialises its writes; only they touch these.
	sizeBuf  [4]byte
	sizeHave int
	outLeft  int64 // bytes of the packet pkg/sftp is writing that are still to come

	// Only pkg/sftp's reading goroutine touches these until it has ended.
	dirs    map[string]*sftpDir // open directories by handle
	lastDir int                 // number in the last directory handle
	// refused is why serve refuses the request serves kept last, nil if it
	// is served: an OPEN with too many files open or of a terminal, or a
	// request too long to inspect (see sftpPeekSize).
	refused error
	// tooLongLogged: the line that says a request too long to inspect was
	// refused has been logged (once a session).
	tooLongLogged bool

	// wmu is held while a reply goes to the channel; once isShut, none does.
	wmu    sync.Mutex
	isShut bool

	mu   sync.Mutex
	cond sync.Cond
	// The counts wrap after 2^31 requests where int has 32 bits (days of
	// one sshfs mount on a device), so they are compared by difference,
	// never by their order: answered-passed < 0, not answered < passed.
	passed    int  // requests handed to pkg/sftp
	answered  int  // replies pkg/sftp has written whole
	lastOther int  // passed when the last request other than a READ was handed on
	closed    bool // the session is closing: nothing waits any more
	readOnly  bool // internal-sftp -R: requests that write are refused (see writes)
	// files are the handles of files pkg/sftp holds open: added when its
	// SSH_FXP_HANDLE reply goes out (only OPEN gets one from it), removed
	// when a CLOSE of one is handed on (pkg/sftp forgets the handle even
	// if close(2) fails).
	files map[string]*openFile
	// opening is the path and flags of the OPEN handed on last, request
	// openingID, until its reply (path "" from then on): an OPEN is handed
	// on only once every request before it is answered (see filesOpen), so
	// at most one waits.
	opening   openFile
	openingID uint32
	// writeID and writeH are the request id and handle of the WRITE handed
	// on last, whose reply is the next (see Read); failCloseID is the CLOSE
	// handed on last, of a file with a failed WRITE if failClose (see
	// writeStatus).
	writeID     uint32
	writeH      string
	failCloseID uint32
	failClose   bool

	// peekID and peekH are the id and handle of the WRITE or CLOSE serves
	// saw last, for Read; only pkg/sftp's reading goroutine touches them.
	peekID uint32
	peekH  string
}

// sftpPeekSize is the buffer through which the front reads the client's
// requests, and so the most of one it sees before it decides whether to
// serve it, pass it on (serves) or rewrite it (kernelPath): the length, type
// and request id, a path of sftpPathMax bytes, and the 32 bytes after it
// (an OPEN's flags, a SETSTAT's attributes but the extended ones, which
// nothing here reads). A request whose part to inspect does not fit (a path
// longer than the kernel takes, a handle or extension name longer than any)
// is refused, never passed on unseen: with bufio's 4096 bytes, an OPEN by a
// path of 4080 bytes or more went to pkg/sftp without its path and flags
// noted, so a file opened to append was written at the client's offset
// (curl --append overwrote the file's start) and a terminal was opened.
// 45 bytes more per session than bufio's default.
const sftpPeekSize = 4 + 1 + 4 + 4 + sftpPathMax + 32

func newSFTPFront(r io.Reader, w io.Writer, workDir string, homeOf func(string) (string, bool), srv *Server) *sftpFront {
	s := &sftpFront{r: bufio.NewReaderSize(r, sftpPeekSize), w: w, workDir: workDir, homeOf: homeOf, srv: srv, dirs: map[string]*sftpDir{}, files: map[string]*openFile{}}
	s.cond.L = &s.mu
	return s
}

// Read hands pkg/sftp the client's packets except those it serves, and each
// WRITE once the one before it has been answered.
func (s *sftpFront) Read(p []byte) (int, error) {
	for s.left == 0 {
		hdr, err := s.r.Peek(5) // length and type
		if err != nil {
			if len(hdr) == 0 {
				return 0, err
			}
			s.left = int64(len(hdr)) // a truncated packet: pkg/sftp reports it
			break
		}
		// Both are read now: hdr is the reader's buffer, which a longer peek
		// (serves, kernelPath) may slide, leaving hdr on other bytes.
		size, typ := binary.BigEndian.Uint32(hdr), hdr[4]
		if !s.serves(typ, size) {
			s.left = 4 + int64(size)
			s.mu.Lock()
			// A READ waits for the requests before it but the READs just
			// before it, and every other request for all before it:
			// pkg/sftp runs a READ or a WRITE on one of 8 workers and the
			// other requests on another, so an FSETSTAT (truncate) sent
			// after a WRITE of the same file could run before it (sshfs's
			// writes are asynchronous), a READ before the WRITE, OPEN
			// (truncating) or truncate sent before it, and a truncate or
			// an OPEN that truncates before the READ sent before it,
			// which then found nothing to read. In order, as sftp-server
			// runs them and draft-ietf-secsh-filexfer asks ("Request
			// Synchronization and Reordering"); a download's READs still
			// run together.
			after := s.lastOther
			if typ != sftpRead {
				after = s.passed
			}
			held := func() bool { return s.answered-after < 0 || s.passed-s.answered >= maxSFTPInFlight }
			waited := held()
			for held() && !s.closed {
				s.cond.Wait()
			}
			closed := s.closed
			s.passed++
			if typ != sftpRead {
				s.lastOther = s.passed
			}
			switch typ {
			case sftpWrite:
				s.writeID, s.writeH = s.peekID, s.peekH
			case sftpClose:
				f := s.files[s.peekH]
				s.failCloseID, s.failClose = s.peekID, f != nil && f.failed
				delete(s.files, s.peekH)
			}
			s.mu.Unlock()
			if closed && (typ == sftpWrite || waited) {
				return 0, errSFTPClosed
			}
			if err := s.kernelPath(typ, size); err != nil {
				return 0, err
			}
			break
		}
		pkt, err := s.serve(int(size))
		if err != nil {
			return 0, err
		}
		if pkt != nil { // handed on after all (see serve)
			s.mu.Lock()
			s.passed++
			s.lastOther = s.passed
			s.mu.Unlock()
			s.pending, s.left = pkt, int64(len(pkt))
		}
	}
	if s.pending != nil {
		n := copy(p, s.pending)
		s.pending = s.pending[n:]
		if len(s.pending) == 0 {
			s.pending = nil
		}
		s.left -= int64(n)
		return n, nil
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	return n, err
}

// kernelPath hands pkg/sftp an OPEN, SETSTAT or READLINK whose
// relative path lexical cleaning would change with the path made absolute as
// the kernel takes it, against the working directory and not cleaned.
// pkg/sftp joins a relative path to its working directory with path.Join,
// which drops a trailing slash and takes "link/.." lexically, while
// OpenSSH's sftp-server hands the path as sent to the kernel. scp's default
// (SFTP) mode sends the remote path as typed, so "scp f host:conf/"
// overwrote the file conf and "scp f host:newdir/" made a file named newdir,
// where sftp-server, like scp -O (resolvePath), refuses both (ENOTDIR,
// EISDIR); and "scp host:link/../f" took f beside link, not beside link's
// target. It reads such a request whole and leaves it, rewritten, in
// pending, s.left its length.
//
// It also gives an OPEN with neither SSH_FXF_READ nor SSH_FXF_WRITE the
// READ flag: sftp-server then opens the file O_RDONLY (0), with O_CREAT and
// O_EXCL or O_TRUNC if asked, where pkg/sftp refused it (EINVAL). Paramiko's
// open(path, "x"), an exclusive create that makes lock files, sends just
// CREAT|EXCL, and so made no file.
func (s *sftpFront) kernelPath(typ byte, size uint32) error {
	switch typ {
	case sftpOpen, sftpSetstat, sftpReadlink:
	default:
		return nil
	}
	if size < 9 || size > maxSFTPPacket {
		return nil // pkg/sftp takes or refuses it as it is
	}
	b, err := s.r.Peek(min(int(4+size), s.r.Size()))
	if len(b) < 13 {
		return nil
	}
	n := binary.BigEndian.Uint32(b[9:13])
	if uint64(n) > uint64(size)-9 {
		return nil
	}
	noAccess := func(pkt []byte) bool {
		return typ == sftpOpen && 17+int(n) <= len(pkt) && binary.BigEndian.Uint32(pkt[13+n:])&(sftpFlagRead|sftpFlagWrite) == 0
	}
	if 13+int(n) > len(b) {
		if err != nil {
			return nil
		}
		// A path longer than the buffer (serves keeps such a request, see
		// tooLong): read the request whole below all the same.
	} else if !s.unclean(string(b[13:13+n])) && !noAccess(b) {
		return nil
	}
	pkt := make([]byte, 4+size)
	if _, err := io.ReadFull(s.r, pkt); err != nil {
		return wrapErr("reading SFTP request", err)
	}
	if noAccess(pkt) {
		pkt[16+n] |= sftpFlagRead
	}
	p := string(pkt[13 : 13+n])
	if !s.unclean(p) {
		s.pending = pkt
		return nil
	}
	abs := s.local(p)
	out := make([]byte, 0, len(pkt)+len(abs))
	out = binary.BigEndian.AppendUint32(out, 0) // the length, below
	out = append(out, pkt[4:9]...)              // type and request id
	out = binary.BigEndian.AppendUint32(out, uint32(len(abs)))
	out = append(out, abs...)
	out = append(out, pkt[13+n:]...)
	if len(out)-4 > maxSFTPPacket {
		s.pending = pkt // too long for pkg/sftp rewritten: it goes as sent
		return nil
	}
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	s.pending, s.left = out, int64(len(out))
	return nil
}

// maxSFTPInFlight bounds the requests handed to pkg/sftp and not yet
// answered. pkg/sftp sends its answers in the order of the requests, so it
// keeps every answer behind one that has not finished; a client that keeps one
// request blocked (an OPEN of a FIFO no program opens) and pipelines READs of a
// file after it made a session hold 32 KiB per 45-byte request, without limit.
// OpenSSH's sftp keeps 64 requests in flight (-R), pkg/sftp's client 64 per
// file.
const maxSFTPInFlight = 64

// expandPath is OpenSSH's extension that sftp's "cd ~" and "cd ~user" use.
const expandPath = "expand-path@openssh.com"

// limitsExt is OpenSSH's extension through which sftp and scp (8.7 and later)
// learn the sizes of the requests a server takes, and size their writes to it.
const limitsExt = "limits@openssh.com"

// usersGroupsExt is OpenSSH's extension (9.1 and later) through which sftp
// names the owners and groups of the files it lists with ls -l.
const usersGroupsExt = "users-groups-by-id@openssh.com"

// fsyncExt is OpenSSH's extension through which sftp -f and put -f have an
// uploaded file flushed to storage before they report it sent.
const fsyncExt = "fsync@openssh.com"

// copyDataExt is the extension (draft-ietf-secsh-filexfer-extensions-00,
// section 7) through which sftp's cp (OpenSSH 9.0 and later) copies a file
// on the server.
const copyDataExt = "copy-data"

// statvfsExt is OpenSSH's extension behind sftp's df and sshfs's statfs.
// pkg/sftp offers it but takes a relative path against the agent's own
// working directory, so it is served here (and not offered again).
const statvfsExt = "statvfs@openssh.com"

// posixRenameExt and hardlinkExt are OpenSSH's extensions behind sftp's
// rename (without -l) and ln, and sshfs's rename and link. pkg/sftp offers
// them but serves posix-rename with os.Rename, which refuses an existing
// directory as the new name where rename(2) replaces an empty one, and both
// with paths cleaned lexically (see kernelPath), so they are served here (and
// not offered again).
const (
	posixRenameExt = "posix-rename@openssh.com"
	hardlinkExt    = "hardlink@openssh.com"
)

// sftpExtensions are the extensions served here, added to pkg/sftp's in
// SSH_FXP_VERSION.
var sftpExtensions = []string{expandPath, limitsExt, usersGroupsExt, fsyncExt, copyDataExt}

// sftpExtReply is SSH_FXP_EXTENDED_REPLY.
const sftpExtReply = 201

// maxSFTPWrite is the data of a WRITE offered in limits@openssh.com: as
// OpenSSH's sftp-server offers (SFTP_MAX_MSG_LENGTH less 1 KiB), so that
// an upload takes a few requests per MiB instead of 32. The session still
// holds one WRITE at a time (see sftpFront).
const maxSFTPWrite = maxSFTPPacket - 1024

// maxSFTPRead is the data a READ gets (pkg/sftp's maxTxPacket, at its default),
// kept so that its 8 workers hold at most 8 such buffers for a download.
const maxSFTPRead = 32 << 10

// serves reports whether the request of type typ and size bytes (after its
// length) is served here, whatever its size: MKDIR, REMOVE, RMDIR, RENAME,
// SYMLINK, REALPATH, STAT, LSTAT, OPENDIR, READDIR (pkg/sftp has no
// directory handles), CLOSE of a directory handle, the sftpExtensions,
// statvfs, posix-rename and hardlink, a WRITE to a file opened to append
// (see appendTo), an FSETSTAT that sets times (see sftpAttrTimes), a SETSTAT
// that sets a time this platform's time_t cannot hold (see beyondTimeT), an FSTAT
// of a directory handle or of a file whose name still leads to it (pkg/sftp
// sends the modification time as the access time, see stat), an OPEN
// while maxOpenHandles files and directories are open, refused, and an OPEN, SETSTAT or
// READLINK of an empty path, which pkg/sftp takes as its working directory
// (see local). A CLOSE of a file that it
// hands on to pkg/sftp is no longer counted open.
//
// The bound and the count hold for a request of any size pkg/sftp takes, not
// only those served here: a client can pad an OPEN or a CLOSE with bytes that
// pkg/sftp ignores.
//
// A request whose handle, name or path (with an OPEN's flags, a SETSTAT's
// attributes) does not fit in the buffer is kept, and refused (see
// sftpPeekSize and tooLong).
func (s *sftpFront) serves(typ byte, size uint32) bool {
	s.refused, s.peekH = nil, ""
	if size < 5 || size > maxSFTPPacket {
		return false // pkg/sftp ends the session
	}
	var req struct {
		ID   uint32
		Arg  string // the handle, or the extension's name
		Rest []byte `ssh:"rest"`
	}
	known := false
	if typ == sftpClose || typ == sftpExt || typ == sftpOpen || typ == sftpWrite || typ == sftpFsetstat || typ == sftpFstat || typ == sftpSetstat || typ == sftpReadlink {
		// The handle, the name or the path is at the start, with the 32
		// bytes that follow a path: a buffer's worth holds them, or the
		// request is refused.
		b, err := s.r.Peek(min(int(4+size), s.r.Size()))
		known = err == nil && gossh.Unmarshal(b[5:], &req) == nil
		s.peekID, s.peekH = req.ID, req.Arg
		if cut := err == nil && len(b) < int(4+size); cut && (!known || len(req.Rest) < 32 && (typ == sftpOpen || typ == sftpSetstat)) {
			s.tooLong(typ, size)
			return true
		}
		if !known && typ != sftpOpen && !s.readOnly {
			return false
		}
	}
	if s.readOnly && (!known && (typ == sftpOpen || typ == sftpExt) || writes(typ, req.Arg, req.Rest)) {
		return true // refused in serve, as is an OPEN or extension not known here
	}
	switch {
	case known && req.Arg == "" && (typ == sftpOpen || typ == sftpReadlink):
		return true // refused: pkg/sftp takes "" as its working directory (see local)
	case typ == sftpReadlink:
		return false
	case typ == sftpOpen:
		switch {
		case s.filesOpen()+len(s.dirs) >= maxOpenHandles:
			s.refused = syscall.EMFILE
			return true
		case known && isTerminal(s.local(req.Arg)):
			s.refused = errTerminal
			return true
		}
		s.mu.Lock()
		s.openingID, s.opening = req.ID, openFile{}
		if req.Arg != "" && len(req.Rest) >= 4 {
			s.opening = openFile{path: s.local(req.Arg), flags: binary.BigEndian.Uint32(req.Rest)}
			if s.opening.flags&(sftpFlagRead|sftpFlagWrite) == 0 {
				s.opening.flags |= sftpFlagRead // as pkg/sftp is handed it (see kernelPath)
			}
		}
		s.mu.Unlock()
		return false
	case typ == sftpWrite:
		f, ok := s.file(req.Arg)
		return ok && f.path != "" && f.flags&sftpFlagAppend != 0
	case typ == sftpFstat:
		f, ok := s.file(req.Arg)
		return s.dirs[req.Arg] != nil || ok && f.path != ""
	case typ == sftpFsetstat:
		f, ok := s.file(req.Arg)
		return ok && f.path != "" && len(req.Rest) >= 4 && binary.BigEndian.Uint32(req.Rest)&sftpAttrTimes != 0
	case typ == sftpSetstat:
		a, err := parseSetAttrs(req.Rest)
		return err == nil && (a.beyondTimeT() || req.Arg == "")
	case typ == sftpClose:
		return s.dirs[req.Arg] != nil
	case typ == sftpExt:
		return slices.Contains(sftpExtensions, req.Arg) || req.Arg == statvfsExt || req.Arg == posixRenameExt || req.Arg == hardlinkExt
	}
	switch typ {
	case sftpMkdir, sftpSymlink, sftpOpendir, sftpReaddir, sftpRemove, sftpRmdir, sftpRename, sftpRealpath, sftpStat, sftpLstat:
		return true
	}
	return false
}

// tooLong has serve refuse a request of type typ and size bytes that
// does not fit in the buffer where its part to inspect should be (see
// sftpPeekSize): a path is too long, as the kernel would say of it
// (ENAMETOOLONG, as sftp-server answers it); a handle is none given out
// (SSH_FX_FAILURE, as pkg/sftp answers an unknown handle, and sftp-server
// but to a CLOSE), and an extension name none known. A SETSTAT is served, as
// sftp-server serves it: each attribute it sets fails with ENAMETOOLONG, and
// one that sets none succeeds.
func (s *sftpFront) tooLong(typ byte, size uint32) {
	switch typ {
	case sftpSetstat:
	case sftpOpen, sftpReadlink:
		s.refused = syscall.ENAMETOOLONG
	case sftpExt:
		s.refused = syscall.ENOSYS
	default:
		s.refused = errNoSuchHandle
	}
	if !s.tooLongLogged && s.srv != nil {
		s.tooLongLogged = true // a client may send any number
		s.srv.log().Debug("sftp request too long to inspect refused (logged once a session)",
			"remote", s.remote, "type", typ, "length", size)
	}
}

// errNoSuchHandle is pkg/sftp's answer to a handle it did not give out.
const errNoSuchHandle = sftpFailureMsg("bad file descriptor")

// readOnlyExts are the extensions served under internal-sftp -R: those that
// change nothing.
var readOnlyExts = []string{expandPath, limitsExt, usersGroupsExt, statvfsExt}

// writes reports whether a request of type typ, with arg and rest as serves
// and serve read them, may change a file or directory: refused under
// internal-sftp -R, as sftp-server -R refuses its requests that write (an
// OPEN to write, create or truncate among them).
func writes(typ byte, arg string, rest []byte) bool {
	switch typ {
	case sftpSetstat, sftpFsetstat, sftpRemove, sftpMkdir, sftpRmdir, sftpRename, sftpSymlink, sftpWrite:
		return true
	case sftpOpen:
		return len(rest) < 4 || binary.BigEndian.Uint32(rest)&(sftpFlagWrite|sftpFlagAppend|sftpFlagCreat|sftpFlagTrunc|sftpFlagExcl) != 0
	case sftpExt:
		return !slices.Contains(readOnlyExts, arg)
	}
	return false
}

// maxSFTPPacket is the longest request pkg/sftp takes (its maxMsgLength); a
// longer one ends the session there.
const maxSFTPPacket = 256 << 10

// maxOpenHandles bounds the handles one SFTP session holds open, files and
// directories together, and is the open-handles limits@openssh.com
// advertises, so that a client that keeps to it is never refused: asyncssh's
// rmtree lists up to 128 directories at once; sftp, scp and rsync hold one or
// two handles, sshfs one per file open on the client. An OPEN or OPENDIR past
// it gets "too many open files" (SSH_FX_FAILURE), as from sftp-server at its
// process's descriptor limit, which it advertises less 5.
//
// One bound for both kinds, not one each, so that a client that never closes
// its handles cannot take all the agent's file descriptors, which its tunnels
// and logins need too: the agent has its hard RLIMIT_NOFILE (the Go runtime
// raises the soft limit to it), on a router often Linux's default 4096 (procd,
// busybox init), and with MaxSessions (10 unless set) SFTP holds at most
// 10 × 128 of them; 128 of each kind would allow 10 × 256.
const maxOpenHandles = 128

// filesOpen waits until pkg/sftp has answered every request before the one
// being read, so that every handle it gave out is counted, and returns how
// many files it holds open (the directories are in s.dirs).
func (s *sftpFront) filesOpen() int {
	s.mu.Lock()
	for s.answered-s.passed < 0 && !s.closed {
		s.cond.Wait()
	}
	n := len(s.files)
	s.mu.Unlock()
	return n
}

// serve reads one request of size bytes (after its length) and answers it
// once pkg/sftp has answered the requests before it. A malformed request
// ends the session, as it does in pkg/sftp. An FSETSTAT that sets times is
// returned instead, to be handed on to pkg/sftp, if its file still has the
// name it was opened by (see sftpAttrTimes) and its times fit in a time_t.
func (s *sftpFront) serve(size int) ([]byte, error) {
	pkt := make([]byte, 4+size)
	if _, err := io.ReadFull(s.r, pkt); err != nil {
		return nil, wrapErr("reading SFTP request", err)
	}
	var req struct {
		ID   uint32
		Arg  string // a path, a handle, SYMLINK's target or the extension's name
		Rest []byte `ssh:"rest"` // SYMLINK's link, RENAME's new path, expand-path's path
	}
	var second struct { // SYMLINK's link, RENAME's new path, expand-path's path, fsync's handle
		Str  string
		Rest []byte `ssh:"rest"` // ignored, as sftp-server ignores it
	}
	err := gossh.Unmarshal(pkt[5:], &req)
	var third struct { // posix-rename's and hardlink's new path
		Str  string
		Rest []byte `ssh:"rest"`
	}
	var cp copyDataRequest
	var mkdirMode uint32
	var attrs setAttrs // SETSTAT's
	var appended struct {
		Offset uint64 // ignored: the data goes at the end
		Data   []byte
	}
	switch {
	case err != nil:
	case pkt[4] == sftpSymlink || pkt[4] == sftpExt && (req.Arg == expandPath || req.Arg == fsyncExt || req.Arg == statvfsExt) || pkt[4] == sftpRename:
		err = gossh.Unmarshal(req.Rest, &second)
	case pkt[4] == sftpExt && (req.Arg == posixRenameExt || req.Arg == hardlinkExt):
		if err = gossh.Unmarshal(req.Rest, &second); err == nil {
			err = gossh.Unmarshal(second.Rest, &third)
		}
	case pkt[4] == sftpExt && req.Arg == copyDataExt:
		err = gossh.Unmarshal(req.Rest, &cp)
	case pkt[4] == sftpMkdir:
		mkdirMode, err = attrsPerm(req.Rest, 0o777)
	case pkt[4] == sftpSetstat:
		attrs, err = parseSetAttrs(req.Rest)
	case pkt[4] == sftpWrite:
		err = gossh.Unmarshal(req.Rest, &appended)
	}
	if err != nil {
		return nil, fmt.Errorf("malformed SFTP request type %d: %w", pkt[4], err)
	}
	s.mu.Lock()
	for s.answered-s.passed < 0 && !s.closed {
		s.cond.Wait()
	}
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errSFTPClosed
	}
	if s.readOnly && writes(pkt[4], req.Arg, req.Rest) {
		// Refused as sftp-server -R refuses it: "permission denied".
		_, err = s.write(sftpStatusPacket(req.ID, syscall.EACCES))
		return nil, err
	}
	if s.refused != nil { // see serves
		_, err = s.write(sftpStatusPacket(req.ID, s.refused))
		return nil, err
	}
	var reply []byte // nil: the status of status
	var status error
	switch pkt[4] {
	case sftpMkdir:
		status = syscall.Mkdir(s.local(req.Arg), mkdirMode)
	case sftpWrite:
		err := s.appendTo(req.Arg, appended.Data)
		if err != nil {
			s.writeFailed(req.Arg)
		}
		status = err
	case sftpSymlink:
		status = os.Symlink(req.Arg, s.local(second.Str))
	case sftpOpendir:
		reply = s.opendir(req.ID, s.local(req.Arg))
	case sftpReaddir:
		reply = s.readdir(req.ID, req.Arg)
	case sftpRemove:
		status = syscall.Unlink(s.local(req.Arg))
	case sftpRmdir:
		status = syscall.Rmdir(s.local(req.Arg))
	case sftpRename:
		status = renameNoReplace(s.local(req.Arg), s.local(second.Str))
	case sftpRealpath:
		reply = s.realpath(req.ID, req.Arg)
	case sftpStat, sftpLstat:
		reply = s.stat(req.ID, s.local(req.Arg), pkt[4] == sftpStat)
	case sftpClose:
		d := s.dirs[req.Arg]
		delete(s.dirs, req.Arg)
		status = d.f.Close()
	case sftpExt:
		switch req.Arg {
		case limitsExt:
			reply = sftpReply(sftpExtReply, req.ID, gossh.Marshal(struct {
				Packet, Read, Write, Handles uint64
			}{maxSFTPPacket, maxSFTPRead, maxSFTPWrite, maxOpenHandles}))
		case usersGroupsExt:
			reply = s.usersGroups(req.ID, req.Rest)
		case fsyncExt:
			status = s.fsync(second.Str)
		case copyDataExt:
			status = s.copyData(cp)
		case statvfsExt:
			reply = s.statvfs(req.ID, second.Str)
		case posixRenameExt:
			status = syscall.Rename(s.local(second.Str), s.local(third.Str))
		case hardlinkExt:
			status = syscall.Link(s.local(second.Str), s.local(third.Str))
		default:
			reply = s.expand(req.ID, second.Str)
		}
	case sftpOpen, sftpReadlink: // the path "": see serves
		status = syscall.ENOENT
	case sftpSetstat: // a time this device's time_t cannot hold, the path "", or one too long to inspect (see serves)
		status = attrs.apply(s.local(req.Arg))
	case sftpFstat:
		var st unix.Stat_t
		if d := s.dirs[req.Arg]; d != nil {
			if err := unix.Fstat(int(d.f.Fd()), &st); err != nil {
				status = err
			} else {
				reply = sftpReply(sftpAttrs, req.ID, gossh.Marshal(fileAttrs(&st)))
			}
			break
		}
		f, _ := s.file(req.Arg)
		if unix.Stat(f.path, &st) == nil && uint64(st.Dev) == f.dev && uint64(st.Ino) == f.ino {
			reply = sftpReply(sftpAttrs, req.ID, gossh.Marshal(fileAttrs(&st)))
			break
		}
		return pkt, nil // renamed or replaced since: pkg/sftp answers from its descriptor
	case sftpFsetstat:
		f, _ := s.file(req.Arg)
		var st syscall.Stat_t
		err := syscall.Stat(f.path, &st)
		if err == nil && !f.is(&st) || err == syscall.ENOENT || err == syscall.ENOTDIR {
			status = errFileMoved
			break
		}
		if a, perr := parseSetAttrs(req.Rest); err == nil && perr == nil && a.beyondTimeT() {
			status = a.apply(f.path) // still the file opened
			break
		}
		return pkt, nil // pkg/sftp sets them, or reports another error
	}
	if reply == nil {
		reply = sftpStatusPacket(req.ID, status)
	}
	_, err = s.write(reply)
	return nil, err
}

// sftpAttrTimes is SSH_FILEXFER_ATTR_ACMODTIME. pkg/sftp serves an FSETSTAT
// that sets times by the name its file was opened by (os.Chtimes), not on the
// descriptor as sftp-server does (futimes(2)): once the file was renamed and
// another took its name, that other file got the times. Such a request is
// handed on only while the name still leads to the file opened, and else
// refused (sftp-server would set the times of the renamed or removed file).
const sftpAttrTimes = 0x8

// removeAndRename: pkg/sftp serves REMOVE and RMDIR both with os.Remove, which
// falls back from one to the other, so "rmdir FILE" deleted the file and "rm
// DIR" an empty directory; and RENAME with rename(2), which replaces an
// existing file where SFTP v3 (draft-ietf-secsh-filexfer-02, 6.5) and
// sftp-server refuse: clients rename a temporary file onto a name to avoid
// clobbering one (sftp's rename -l, Paramiko). Here REMOVE is unlink(2), RMDIR
// rmdir(2), and RENAME renameNoReplace. posix-rename@openssh.com, which does
// replace, is rename(2) (see posixRenameExt).

// renameNoReplace renames from to to unless to exists. A regular file gets
// its new name as a hard link and then loses the old one, so that a file
// made at to meanwhile is never replaced; on a file system without hard links
// (vfat on a device's SD card), and for other kinds of file, an existing to is
// refused and then rename(2) runs, which leaves a moment between the two.
func renameNoReplace(from, to string) error {
	fi, err := os.Lstat(from)
	if err != nil {
		return err
	}
	if fi.Mode().IsRegular() {
		err := os.Link(from, to)
		if err == nil {
			if err := syscall.Unlink(from); err != nil {
				syscall.Unlink(to) // the file keeps its one name
				return err
			}
			return nil
		}
		if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EOPNOTSUPP) && !errors.Is(err, syscall.ENOSYS) {
			return err // EEXIST among them: the name is taken
		}
	}
	if _, err := os.Lstat(to); err == nil {
		return syscall.EEXIST
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Rename(from, to)
}

// expand answers expand-path@openssh.com as sftp-server does: "" is ".", a
// leading ~ is the working directory (as getcwd(3) has it) and ~user that
// user's home, a relative path is taken against the working directory, and
// the result is its realPath: a last name that does not exist is named
// (scp's "host:~user/newfile" is a file to make), not refused.
func (s *sftpFront) expand(id uint32, p string) []byte {
	cwd, err := realPath("/", s.workDir, nil)
	if err != nil {
		return sftpStatusPacket(id, err)
	}
	if p == "" {
		p = "."
	}
	if rest, ok := strings.CutPrefix(p, "~"); ok {
		user, tail, _ := strings.Cut(rest, "/")
		home, ok := cwd, true
		if user != "" {
			home, ok = s.homeOf(user)
		}
		if !ok {
			return sftpStatusPacket(id, syscall.ENOENT)
		}
		p = home + "/" + tail
	}
	if !path.IsAbs(p) {
		p = cwd + "/" + p
	}
	p, err = realPath("/", p, nil)
	return sftpNamePacket(id, p, err)
}

// realpath answers SSH_FXP_REALPATH as sftp-server does: "" is ".", and the
// path is its realPath against the working directory. pkg/sftp cleaned it
// lexically: "deep/../x" with deep a link to dir/sub was ~/x, not ~/dir/x, so
// "scp -r d host:deep/../x" and sftp's "put -r d deep/../x" made ~/x; and
// "newdir/" was a path where sftp-server finds no such directory.
func (s *sftpFront) realpath(id uint32, p string) []byte {
	if p == "" {
		p = "."
	}
	p, err := realPath(s.workDir, p, nil)
	return sftpNamePacket(id, p, err)
}

// sftpPathMax is Linux's PATH_MAX, which bounds sftp-server's paths.
const sftpPathMax = 4096

// sftpNamePacket is the SSH_FXP_NAME reply with the one name p (as its long
// name too, without attributes), as sftp-server answers REALPATH and
// expand-path, or the SSH_FXP_STATUS reply for err.
func sftpNamePacket(id uint32, p string, err error) []byte {
	if err != nil {
		return sftpStatusPacket(id, err)
	}
	return sftpReply(sftpName, id, gossh.Marshal(struct {
		Count          uint32
		Name, LongName string
		Flags          uint32
		_              func() // see sftpStatusPacket
	}{Count: 1, Name: p, LongName: p}))
}

// usersGroups answers users-groups-by-id@openssh.com: two strings of
// packed uint32 ids, uids then gids, are answered with two strings that
// hold the name of each, in order, "" for an id the passwd or group file
// does not name (the client then shows the number), as sftp-server does.
func (s *sftpFront) usersGroups(id uint32, body []byte) []byte {
	var req struct{ UIDs, GIDs []byte }
	if gossh.Unmarshal(body, &req) != nil || len(req.UIDs)%4 != 0 || len(req.GIDs)%4 != 0 {
		return sftpStatusPacket(id, syscall.EINVAL)
	}
	names := idNames{srv: s.srv}
	list := func(ids []byte, name func(uint32) (string, bool)) []byte {
		var out []byte
		for i := 0; i < len(ids); i += 4 {
			n, _ := name(binary.BigEndian.Uint32(ids[i:]))
			out = binary.BigEndian.AppendUint32(out, uint32(len(n)))
			out = append(out, n...)
		}
		return out
	}
	return sftpReply(sftpExtReply, id, gossh.Marshal(struct{ Users, Groups []byte }{
		list(req.UIDs, names.lookupUser), list(req.GIDs, names.lookupGroup),
	}))
}

// attrsPerm returns the permissions in ATTRS (draft-ietf-secsh-filexfer-02,
// section 5) at the start of b, with the set-id and sticky bits, or def
// when it has none, as sftp-server's process_mkdir takes them. pkg/sftp made
// every directory 0755, whatever the client asked (Paramiko's mkdir(p, 0o700)).
func attrsPerm(b []byte, def uint32) (uint32, error) {
	a, err := parseSetAttrs(b)
	switch {
	case err != nil:
		return 0, err
	case a.flags&0x4 == 0: // SSH_FILEXFER_ATTR_PERMISSIONS
		return def, nil
	}
	return a.perms & 0o7777, nil
}

// setAttrs is what a SETSTAT or FSETSTAT sets: the attributes its flags
// name (SSH_FILEXFER_ATTR_*); extended ones are ignored, as by pkg/sftp.
type setAttrs struct {
	flags        uint32
	size         uint64
	uid, gid     uint32
	perms        uint32
	atime, mtime uint32
}

// parseSetAttrs reads the attributes of a SETSTAT, FSETSTAT or MKDIR, after
// the path or handle.
func parseSetAttrs(b []byte) (setAttrs, error) {
	short := false
	take := func(n int) (v uint64) {
		if len(b) < n {
			short = true
			return 0
		}
		for _, c := range b[:n] {
			v = v<<8 | uint64(c)
		}
		b = b[n:]
		return v
	}
	var a setAttrs
	a.flags = uint32(take(4))
	if a.flags&0x1 != 0 { // SIZE
		a.size = take(8)
	}
	if a.flags&0x2 != 0 { // UIDGID
		a.uid, a.gid = uint32(take(4)), uint32(take(4))
	}
	if a.flags&0x4 != 0 { // PERMISSIONS
		a.perms = uint32(take(4))
	}
	if a.flags&sftpAttrTimes != 0 {
		a.atime, a.mtime = uint32(take(4)), uint32(take(4))
	}
	if short {
		return a, errors.New("attributes cut short")
	}
	return a, nil
}

// beyondTimeT reports whether a sets a time that this platform's time_t
// cannot hold: one after January 2038 on a 32-bit device (SFTP's times go to
// 2106). pkg/sftp's os.Chtimes would set such a time in 1901 there, so the
// front sets all of a instead (apply). Never on a 64-bit platform.
func (a setAttrs) beyondTimeT() bool {
	if a.flags&sftpAttrTimes == 0 {
		return false
	}
	_, aerr := unix.TimeToTimespec(time.Unix(int64(a.atime), 0))
	_, merr := unix.TimeToTimespec(time.Unix(int64(a.mtime), 0))
	return aerr != nil || merr != nil
}

// apply sets a on path as pkg/sftp does, in its order (size, permissions,
// owner, times), stopping at the first failure. The times are set by
// setTimes: on a kernel that cannot hold them the request fails with
// EOVERFLOW rather than setting another time.
func (a setAttrs) apply(path string) error {
	if a.flags&0x1 != 0 {
		if a.size > math.MaxInt64 {
			return syscall.EINVAL
		}
		if err := syscall.Truncate(path, int64(a.size)); err != nil {
			return err
		}
	}
	if a.flags&0x4 != 0 {
		if err := syscall.Chmod(path, a.perms&0o7777); err != nil {
			return err
		}
	}
	if a.flags&0x2 != 0 {
		if err := syscall.Chown(path, int(a.uid), int(a.gid)); err != nil {
			return err
		}
	}
	if a.flags&sftpAttrTimes != 0 {
		return setTimes(path, int64(a.atime), int64(a.mtime))
	}
	return nil
}

// statvfs answers statvfs@openssh.com for path p as sftp-server does (of
// the flags, only ST_RDONLY and ST_NOSUID).
func (s *sftpFront) statvfs(id uint32, p string) []byte {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.local(p), &st); err != nil {
		return sftpStatusPacket(id, err)
	}
	flag := uint64(0)
	if st.Flags&0x1 != 0 { // ST_RDONLY
		flag |= 1
	}
	if st.Flags&0x2 != 0 { // ST_NOSUID
		flag |= 2
	}
	return sftpReply(sftpExtReply, id, gossh.Marshal(struct {
		Bsize, Frsize, Blocks, Bfree, Bavail, Files, Ffree, Favail, Fsid, Flag, Namemax uint64
	}{
		uint64(st.Bsize), uint64(st.Frsize), st.Blocks, st.Bfree, st.Bavail, st.Files, st.Ffree, st.Ffree,
		uint64(uint32(st.Fsid.X__val[0])) | uint64(uint32(st.Fsid.X__val[1]))<<32, flag, uint64(st.Namelen),
	}))
}

// local resolves a client's path against the working directory as the
// kernel would, as sftp-server's chdir has it: lexical cleaning is used only
// where it changes nothing (a trailing "/" says the name is a directory;
// "link/.." is the parent of link's target).
//
// An empty path stays empty, so the kernel refuses it (ENOENT), as it does
// sftp-server's: joined, it named the working directory, and a RENAME or an
// RMDIR of "" (dirname("f") from a client that never changes directory)
// moved or removed the home directory.
func (s *sftpFront) local(p string) string {
	if p == "" || path.IsAbs(p) {
		return p
	}
	if s.unclean(p) {
		return strings.TrimSuffix(s.workDir, "/") + "/" + p
	}
	return path.Join(s.workDir, p)
}

// unclean reports whether p is relative and joining it to the working
// directory with path.Join (as pkg/sftp does) would change it.
func (s *sftpFront) unclean(p string) bool {
	if p == "" || path.IsAbs(p) {
		return false
	}
	return path.Join(s.workDir, p) != strings.TrimSuffix(s.workDir, "/")+"/"+p
}

// Write passes pkg/sftp's replies on and counts those written whole. Its
// first, SSH_FXP_VERSION, gets sftpExtensions added to the extensions
// pkg/sftp lists.
func (s *sftpFront) Write(b []byte) (int, error) {
	out := b
	if !s.versioned {
		s.versioned = true
		if len(b) > 4 && b[4] == sftpVersion && int(binary.BigEndian.Uint32(b)) == len(b)-4 {
			out = b[:len(b):len(b)]
			for _, ext := range sftpExtensions {
				out = append(out, gossh.Marshal(struct {
					Name, Data string
					_          func() // see sftpStatusPacket
				}{Name: ext, Data: "1"})...)
			}
			binary.BigEndian.PutUint32(out, uint32(len(out)-4))
		}
	}
	if s.outLeft == 0 && s.sizeHave == 0 {
		out = statusCode(out)
		if len(out) >= 13 && out[4] == sftpStatus {
			out = s.writeStatus(out)
		}
	}
	if s.outLeft == 0 && s.sizeHave == 0 && len(b) > 9 && b[4] == sftpHandle {
		var h struct{ H string }
		if gossh.Unmarshal(b[9:], &h) == nil {
			s.opened(binary.BigEndian.Uint32(b[5:]), h.H)
		}
	}
	n, err := s.write(out)
	whole := 0
	for rest := out[:n]; len(rest) > 0; {
		if s.outLeft == 0 {
			k := copy(s.sizeBuf[s.sizeHave:], rest)
			s.sizeHave += k
			rest = rest[k:]
			if s.sizeHave < 4 {
				break
			}
			s.sizeHave = 0
			if s.outLeft = int64(binary.BigEndian.Uint32(s.sizeBuf[:])); s.outLeft == 0 {
				whole++
			}
			continue
		}
		k := min(int64(len(rest)), s.outLeft)
		s.outLeft -= k
		rest = rest[k:]
		if s.outLeft == 0 {
			whole++
		}
	}
	if whole > 0 || err != nil {
		s.mu.Lock()
		s.answered += whole
		s.closed = s.closed || err != nil
		s.cond.Broadcast()
		s.mu.Unlock()
	}
	return min(n, len(b)), err // of b, without what was added to it
}

// statusCode returns the whole packet b, an SSH_FXP_STATUS of pkg/sftp's
// with SSH_FX_FAILURE for an errno that sftp-server gives another code
// (sftpErrnoCode), as a copy with that code: ENOTDIR and ELOOP (a path through
// a regular file, a loop of symbolic links) are NO_SUCH_FILE, which sshfs
// turns into ENOENT (from SSH_FX_FAILURE: EPERM); pkg/sftp gives it only to
// ENOENT. ENAMETOOLONG is BAD_MESSAGE. Its message is its error's text, which ends with the errno's.
func statusCode(b []byte) []byte {
	if len(b) < 13 || b[4] != sftpStatus || int64(binary.BigEndian.Uint32(b)) != int64(len(b)-4) || binary.BigEndian.Uint32(b[9:]) != sftpFailure {
		return b
	}
	var st struct {
		Code uint32
		Msg  string
		Rest []byte `ssh:"rest"`
	}
	if gossh.Unmarshal(b[9:], &st) != nil {
		return b
	}
	for _, e := range []syscall.Errno{syscall.ENOTDIR, syscall.ELOOP, syscall.ENAMETOOLONG} {
		if st.Msg == e.Error() || strings.HasSuffix(st.Msg, ": "+e.Error()) {
			c := slices.Clone(b)
			binary.BigEndian.PutUint32(c[9:], sftpErrnoCode(e))
			return c
		}
	}
	return b
}

// write sends b to the channel unless the front has been shut.
func (s *sftpFront) write(b []byte) (int, error) {
	s.wmu.Lock()
	n, err := 0, io.ErrClosedPipe
	if !s.isShut {
		n, err = s.w.Write(b)
	}
	s.wmu.Unlock()
	return n, err
}

// shut ends the front for a session that no longer waits for pkg/sftp: it
// returns once no reply is being written, and none is after it.
func (s *sftpFront) shut() {
	s.wmu.Lock()
	s.isShut = true
	s.wmu.Unlock()
	s.close()
}

// close lets a request that waits give up: pkg/sftp is closing the session.
func (s *sftpFront) close() {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// sftpStatusPacket is the SSH_FXP_STATUS reply for err, with OpenSSH's
// sftp-server's mapping of errors to codes; the message is the error's
// errno text or an sftpFailureMsg, never a path.
func sftpStatusPacket(id uint32, err error) []byte {
	code, msg := uint32(sftpOK), "Success"
	var errno syscall.Errno
	var failure sftpFailureMsg
	switch {
	case err == nil:
	case err == io.EOF:
		code, msg = sftpEOF, "End of file"
	case errors.As(err, &failure):
		code, msg = sftpFailure, string(failure)
	case errors.As(err, &errno):
		code, msg = sftpErrnoCode(errno), errno.Error()
	default:
		code, msg = sftpFailure, "Failure"
	}
	return sftpReply(sftpStatus, id, gossh.Marshal(struct {
		Code      uint32
		Msg, Lang string
		// A func makes the struct not comparable, so that no equality
		// function is linked for it (docs/size.md). gossh.Marshal skips
		// it, where it panics on the usual `_ [0]func()`.
		_ func()
	}{Code: code, Msg: msg}))
}

// sftpErrnoCode is the status code for errno, as sftp-server's
// errno_to_portable gives it.
func sftpErrnoCode(errno syscall.Errno) uint32 {
	switch errno {
	case syscall.ENOENT, syscall.ENOTDIR, syscall.ELOOP, syscall.EBADF:
		return sftpNoSuchFile
	case syscall.EPERM, syscall.EACCES:
		return sftpPermissionDenied
	case syscall.ENAMETOOLONG:
		return sftpBadMessage
	case syscall.ENOSYS:
		return sftpOpUnsupported
	}
	return sftpFailure
}

// sftpReply frames a reply of type typ to request id.
func sftpReply(typ byte, id uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(5+len(data)))
	b = append(b, typ)
	b = binary.BigEndian.AppendUint32(b, id)
	return append(b, data...)
}
