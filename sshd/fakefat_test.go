package sshd

// A minimal in-memory FUSE file system with the permission semantics of the
// kernel's vfat mounted with its defaults (fmask=dmask=umask, 022): every file
// is mode 0755 and every directory 0755; chmod that FAT cannot represent
// succeeds without changing anything (fs/fat/file.c fat_setattr: "We don't
// return -EPERM here. Yes, strange, but this is too old behavior."); link(2)
// fails with EPERM (vfat has no ->link). The machine's kernel has no vfat, so
// FUSE stands in for it.

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"sync"
	"syscall"
	"testing"
	"unsafe"
)

type fatNode struct {
	dir  bool
	data []byte
	kids map[string]uint64
}

type fakeFAT struct {
	mu    sync.Mutex
	nodes map[uint64]*fatNode
	next  uint64
	perm  uint32 // of every file: 0o777 less the mount's fmask
}

const (
	fuseLookup      = 1
	fuseForget      = 2
	fuseGetattr     = 3
	fuseSetattr     = 4
	fuseMkdir       = 9
	fuseUnlink      = 10
	fuseRmdir       = 11
	fuseRename      = 12
	fuseLink        = 13
	fuseOpen        = 14
	fuseRead        = 15
	fuseWrite       = 16
	fuseRelease     = 18
	fuseFsync       = 20
	fuseFlush       = 25
	fuseInit        = 26
	fuseOpendir     = 27
	fuseReaddir     = 28
	fuseReleasedir  = 29
	fuseFsyncdir    = 30
	fuseAccess      = 34
	fuseCreate      = 35
	fuseInterrupt   = 36
	fuseDestroy     = 38
	fuseBatchForget = 42
	fuseRename2     = 45
)

// mountFakeFAT mounts a fakeFAT on a new directory and returns it: every
// file of mode perm, as vfat mounted with fmask=0777&^perm makes them (its
// default: 0755).
func mountFakeFAT(t *testing.T, perm uint32) string {
	t.Helper()
	// Not a real program that CI must install: a kernel feature some
	// containers lack, so this skips even under CI=true.
	if os.Geteuid() != 0 {
		t.Skip("mounting the fake vfat (FUSE) needs root")
	}
	// Under qemu-user the host kernel speaks FUSE in its own byte order and
	// word size, and the emulated poll trick below cannot be relied on: a
	// mismatch would hang the test binary. The native run covers it.
	if arch := os.Getenv("PORTHOLE_QEMU_USER"); arch != "" {
		t.Skipf("the fake vfat (FUSE) runs natively only, not under qemu-user (%s)", arch)
	}
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	dir := t.TempDir()
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd)
	if err := syscall.Mount("fakefat", dir, "fuse", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		syscall.Close(fd)
		t.Skipf("cannot mount FUSE here: %v", err)
	}
	fs := &fakeFAT{nodes: map[uint64]*fatNode{1: {dir: true, kids: map[string]uint64{}}}, next: 2, perm: perm}
	done := make(chan struct{})
	go func() { defer close(done); fs.serve(fd) }()
	t.Cleanup(func() {
		syscall.Unmount(dir, syscall.MNT_DETACH)
		<-done
		syscall.Close(fd)
	})
	noPoll(t, dir)
	return dir
}

// noPoll stops the kernel asking the fake for poll(2) on its files. Go adds
// every file it opens to its epoll set in a call that keeps the thread's P,
// and on FUSE that call waits for the server (FUSE_POLL): a stop-the-world GC
// then waits for that thread, while the server, in this same process, waits
// for a P to answer (the whole test binary hangs). Answered ENOSYS once, the
// kernel asks no more (fc->no_poll), so it is asked once here through a system
// call that leaves its P.
func noPoll(t *testing.T, dir string) {
	t.Helper()
	fd, err := syscall.Open(dir+"/.poll", syscall.O_CREAT|syscall.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Unlink(dir + "/.poll")
	defer syscall.Close(fd)
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(ep)
	// Not syscall.EpollCtl: a raw system call, which keeps the P too.
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
	syscall.Syscall6(syscall.SYS_EPOLL_CTL, uintptr(ep), syscall.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
}

var le = binary.NativeEndian // FUSE speaks the kernel's byte order

func (fs *fakeFAT) serve(fd int) {
	buf := make([]byte, 1<<20+4096)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR || err == syscall.ENOENT || err == syscall.EAGAIN {
			continue
		}
		if err != nil {
			return // ENODEV: unmounted
		}
		in := buf[:n]
		op, unique, node := le.Uint32(in[4:]), le.Uint64(in[8:]), le.Uint64(in[16:])
		body := in[40:]
		switch op {
		case fuseForget, fuseBatchForget, fuseInterrupt:
			continue
		}
		fs.mu.Lock()
		out, errno := fs.handle(op, node, body)
		fs.mu.Unlock()
		hdr := make([]byte, 16)
		le.PutUint32(hdr[0:], uint32(16+len(out)))
		le.PutUint32(hdr[4:], uint32(-int32(errno)))
		le.PutUint64(hdr[8:], unique)
		if errno != 0 {
			out = nil
			le.PutUint32(hdr[0:], 16)
		}
		syscall.Write(fd, append(hdr, out...))
		if op == fuseDestroy {
			return
		}
	}
}

func cstr(b []byte) (string, []byte) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:]
		}
	}
	return string(b), nil
}

// attr is a fuse_attr: every file fs.perm, every directory 0755, as vfat's
// defaults (perm 0755).
func (fs *fakeFAT) attr(ino uint64) []byte {
	n := fs.nodes[ino]
	a := make([]byte, 88)
	le.PutUint64(a[0:], ino)
	le.PutUint64(a[8:], uint64(len(n.data)))
	le.PutUint64(a[16:], uint64(len(n.data)+511)/512)
	mode, nlink := uint32(syscall.S_IFREG)|fs.perm, uint32(1)
	if n.dir {
		mode, nlink = syscall.S_IFDIR|0o755, 2
	}
	le.PutUint32(a[60:], mode)
	le.PutUint32(a[64:], nlink)
	le.PutUint32(a[80:], 4096)
	return a
}

func (fs *fakeFAT) entry(ino uint64) []byte {
	e := make([]byte, 40)
	le.PutUint64(e[0:], ino)
	return append(e, fs.attr(ino)...)
}

func (fs *fakeFAT) attrOut(ino uint64) []byte {
	return append(make([]byte, 16), fs.attr(ino)...)
}

func openOut(fh uint64) []byte {
	o := make([]byte, 16)
	le.PutUint64(o, fh)
	return o
}

func (fs *fakeFAT) newNode(parent uint64, name string, dir bool) uint64 {
	ino := fs.next
	fs.next++
	n := &fatNode{dir: dir}
	if dir {
		n.kids = map[string]uint64{}
	}
	fs.nodes[ino] = n
	fs.nodes[parent].kids[name] = ino
	return ino
}

func (fs *fakeFAT) handle(op uint32, node uint64, body []byte) ([]byte, syscall.Errno) {
	n := fs.nodes[node]
	if n == nil && op != fuseInit && op != fuseDestroy {
		return nil, syscall.ENOENT
	}
	switch op {
	case fuseInit:
		o := make([]byte, 24)
		le.PutUint32(o[0:], 7)
		le.PutUint32(o[4:], 19)
		le.PutUint32(o[8:], le.Uint32(body[8:]))
		le.PutUint16(o[16:], 16)
		le.PutUint16(o[18:], 12)
		le.PutUint32(o[20:], 128<<10)
		return o, 0
	case fuseDestroy, fuseRelease, fuseReleasedir, fuseFlush, fuseFsync, fuseFsyncdir, fuseAccess:
		return nil, 0
	case fuseLookup:
		name, _ := cstr(body)
		if !n.dir {
			return nil, syscall.ENOTDIR
		}
		ino, ok := n.kids[name]
		if !ok {
			return nil, syscall.ENOENT
		}
		return fs.entry(ino), 0
	case fuseGetattr:
		return fs.attrOut(node), 0
	case fuseSetattr:
		valid := le.Uint32(body[0:])
		if valid&(1<<3) != 0 { // FATTR_SIZE
			size := le.Uint64(body[16:])
			if size <= uint64(len(n.data)) {
				n.data = n.data[:size]
			} else {
				n.data = append(n.data, make([]byte, size-uint64(len(n.data)))...)
			}
		}
		// FATTR_MODE: accepted and ignored, as fat_setattr does with a mode
		// FAT cannot hold.
		return fs.attrOut(node), 0
	case fuseMkdir:
		name, _ := cstr(body[8:])
		if _, ok := n.kids[name]; ok {
			return nil, syscall.EEXIST
		}
		return fs.entry(fs.newNode(node, name, true)), 0
	case fuseCreate:
		name, _ := cstr(body[16:])
		if _, ok := n.kids[name]; ok {
			return nil, syscall.EEXIST
		}
		ino := fs.newNode(node, name, false)
		return append(fs.entry(ino), openOut(ino)...), 0
	case fuseUnlink, fuseRmdir:
		name, _ := cstr(body)
		ino, ok := n.kids[name]
		if !ok {
			return nil, syscall.ENOENT
		}
		if k := fs.nodes[ino]; k.dir && len(k.kids) > 0 {
			return nil, syscall.ENOTEMPTY
		}
		delete(n.kids, name)
		return nil, 0
	case fuseRename, fuseRename2:
		newdir := le.Uint64(body[0:])
		rest := body[8:]
		if op == fuseRename2 {
			rest = body[16:]
		}
		oldname, rest := cstr(rest)
		newname, _ := cstr(rest)
		ino, ok := n.kids[oldname]
		nd := fs.nodes[newdir]
		if !ok || nd == nil {
			return nil, syscall.ENOENT
		}
		delete(n.kids, oldname)
		nd.kids[newname] = ino
		return nil, 0
	case fuseLink:
		return nil, syscall.EPERM // vfat has no ->link
	case fuseOpen, fuseOpendir:
		return openOut(node), 0
	case fuseRead:
		off, size := le.Uint64(body[8:]), uint64(le.Uint32(body[16:]))
		if off >= uint64(len(n.data)) {
			return []byte{}, 0
		}
		end := min(off+size, uint64(len(n.data)))
		return append([]byte(nil), n.data[off:end]...), 0
	case fuseWrite:
		off, size := le.Uint64(body[8:]), uint64(le.Uint32(body[16:]))
		data := body[40 : 40+size]
		if need := off + size; need > uint64(len(n.data)) {
			n.data = append(n.data, make([]byte, need-uint64(len(n.data)))...)
		}
		copy(n.data[off:], data)
		o := make([]byte, 8)
		le.PutUint32(o, uint32(size))
		return o, 0
	case fuseReaddir:
		off, size := le.Uint64(body[8:]), int(le.Uint32(body[16:]))
		names := []string{".", ".."}
		for k := range n.kids {
			names = append(names, k)
		}
		sort.Strings(names[2:])
		var out []byte
		for i := int(off); i < len(names); i++ {
			ino := node
			if k, ok := n.kids[names[i]]; ok {
				ino = k
			}
			typ := uint32(syscall.DT_REG)
			if fs.nodes[ino].dir {
				typ = syscall.DT_DIR
			}
			rec := make([]byte, 24+len(names[i]))
			le.PutUint64(rec[0:], ino)
			le.PutUint64(rec[8:], uint64(i+1))
			le.PutUint32(rec[16:], uint32(len(names[i])))
			le.PutUint32(rec[20:], typ)
			copy(rec[24:], names[i])
			for len(rec)%8 != 0 {
				rec = append(rec, 0)
			}
			if len(out)+len(rec) > size {
				break
			}
			out = append(out, rec...)
		}
		return out, 0
	}
	return nil, syscall.ENOSYS
}
