package sshd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sync"
	"syscall"

	gossh "golang.org/x/crypto/ssh"
)

// SFTP version 3 (draft-ietf-secsh-filexfer-02) numbers used here.
const (
	sftpWrite   = 6   // SSH_FXP_WRITE
	sftpSymlink = 20  // SSH_FXP_SYMLINK
	sftpStatus  = 101 // SSH_FXP_STATUS

	sftpOK               = 0 // SSH_FX_OK
	sftpNoSuchFile       = 2 // SSH_FX_NO_SUCH_FILE
	sftpPermissionDenied = 3 // SSH_FX_PERMISSION_DENIED
	sftpFailure          = 4 // SSH_FX_FAILURE
)

// maxSymlinkPacket is the largest SSH_FXP_SYMLINK served here: two paths of
// up to PATH_MAX (4096) and their framing fit with room to spare. A longer
// one is passed to pkg/sftp, whose symlink(2) then fails (ENAMETOOLONG) or
// which refuses it as too long.
const maxSymlinkPacket = 16 << 10

// errSFTPClosed is returned to pkg/sftp's reader when the SFTP session was
// closed while a SYMLINK request waited for the requests before it.
var errSFTPClosed = errors.New("sshd: sftp session closed")

// symlinkServer sits between the session channel and pkg/sftp and serves
// SSH_FXP_SYMLINK itself. pkg/sftp, given a working directory, makes both
// of the request's paths absolute, so a relative target ("symlink
// renamed.bin link.bin" after "cd dir") became a link to a file in the
// home directory. OpenSSH's sftp-server stores the target exactly as sent,
// relative or absolute, and so does this; only the link's own path is
// resolved against the working directory. As in OpenSSH's sftp and
// sftp-server (PROTOCOL section 4.1) and pkg/sftp, the target comes first.
//
// To keep requests in order, a SYMLINK is served once pkg/sftp has answered
// every request before it (pkg/sftp answers each request exactly once, in
// order); pkg/sftp then writes nothing until it gets the next request, so
// the status reply cannot land inside one of its packets.
//
// It also hands pkg/sftp one WRITE at a time: the next once the one before has
// been answered. pkg/sftp runs reads and writes on 8 workers, so the pipelined
// writes of an upload ran out of order, and when one failed (a full disk) writes
// at later offsets already queued still landed, leaving a file longer than what
// was written, with a hole. sftp's reput and put -a resume from the remote size
// and trust what is before it, so they then built a corrupt file and reported
// success. In order, as OpenSSH's sftp-server runs them, a failed upload leaves
// a clean prefix. (pkg/sftp's worker count is a constant.) The writes go to the
// page cache, far faster than the SSH cipher delivers them.
type symlinkServer struct {
	r       *bufio.Reader // the channel's data
	w       io.Writer     // the channel
	workDir string

	// Only pkg/sftp's reading goroutine touches left.
	left int64 // bytes of the packet being passed to pkg/sftp that it has yet to read

	// pkg/sftp serialises its writes; only they touch these.
	sizeBuf  [4]byte
	sizeHave int
	outLeft  int64 // bytes of the packet pkg/sftp is writing that are still to come

	mu        sync.Mutex
	cond      sync.Cond
	passed    int  // requests handed to pkg/sftp
	answered  int  // replies pkg/sftp has written whole
	lastWrite int  // passed when the last WRITE was handed on
	closed    bool // the session is closing: nothing waits any more
}

func newSymlinkServer(r io.Reader, w io.Writer, workDir string) *symlinkServer {
	s := &symlinkServer{r: bufio.NewReader(r), w: w, workDir: workDir}
	s.cond.L = &s.mu
	return s
}

// Read hands pkg/sftp the client's packets except SYMLINK requests, which it
// serves, and each WRITE once the one before it has been answered.
func (s *symlinkServer) Read(p []byte) (int, error) {
	for s.left == 0 {
		hdr, err := s.r.Peek(5) // length and type
		if err != nil {
			if len(hdr) == 0 {
				return 0, err
			}
			s.left = int64(len(hdr)) // a truncated packet: pkg/sftp reports it
			break
		}
		size := binary.BigEndian.Uint32(hdr)
		if hdr[4] != sftpSymlink || size < 5 || size > maxSymlinkPacket {
			s.left = 4 + int64(size)
			s.mu.Lock()
			for hdr[4] == sftpWrite && s.answered < s.lastWrite && !s.closed {
				s.cond.Wait()
			}
			closed := s.closed
			s.passed++
			if hdr[4] == sftpWrite {
				s.lastWrite = s.passed
			}
			s.mu.Unlock()
			if closed && hdr[4] == sftpWrite {
				return 0, errSFTPClosed
			}
			break
		}
		if err := s.symlink(int(size)); err != nil {
			return 0, err
		}
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	return n, err
}

// symlink reads one SYMLINK request of size bytes (after its length) and
// answers it once pkg/sftp has answered the requests before it. A malformed
// request ends the session, as it does in pkg/sftp.
func (s *symlinkServer) symlink(size int) error {
	pkt := make([]byte, 4+size)
	if _, err := io.ReadFull(s.r, pkt); err != nil {
		return fmt.Errorf("reading SSH_FXP_SYMLINK: %w", err)
	}
	var req struct {
		ID     uint32
		Target string
		Link   string
	}
	if err := gossh.Unmarshal(pkt[5:], &req); err != nil {
		return fmt.Errorf("malformed SSH_FXP_SYMLINK: %w", err)
	}
	s.mu.Lock()
	for s.answered < s.passed && !s.closed {
		s.cond.Wait()
	}
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errSFTPClosed
	}
	link := req.Link
	if !path.IsAbs(link) {
		link = path.Join(s.workDir, link)
	}
	_, err := s.w.Write(sftpStatusPacket(req.ID, os.Symlink(req.Target, link)))
	return err
}

// Write passes pkg/sftp's replies on and counts those written whole.
func (s *symlinkServer) Write(b []byte) (int, error) {
	n, err := s.w.Write(b)
	whole := 0
	for rest := b[:n]; len(rest) > 0; {
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
	return n, err
}

// close lets a SYMLINK or WRITE request that waits give up: pkg/sftp is
// closing the session.
func (s *symlinkServer) close() {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// sftpStatusPacket is the SSH_FXP_STATUS reply for err, with OpenSSH's
// sftp-server's mapping of errors to codes; the message is the error's
// errno text, never a path.
func sftpStatusPacket(id uint32, err error) []byte {
	code, msg := uint32(sftpOK), "Success"
	var errno syscall.Errno
	switch {
	case err == nil:
	case errors.As(err, &errno):
		msg = errno.Error()
		switch errno {
		case syscall.ENOENT, syscall.ENOTDIR, syscall.ELOOP:
			code = sftpNoSuchFile
		case syscall.EPERM, syscall.EACCES:
			code = sftpPermissionDenied
		default:
			code = sftpFailure
		}
	default:
		code, msg = sftpFailure, "Failure"
	}
	b := make([]byte, 4, 4+1+4+4+4+len(msg)+4)
	b = append(b, sftpStatus)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint32(b, code)
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	b = append(b, msg...)
	b = binary.BigEndian.AppendUint32(b, 0) // language tag
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}
