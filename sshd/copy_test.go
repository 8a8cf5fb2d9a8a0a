package sshd

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
	"testing/iotest"
)

// chunkReader returns its data in the chunk sizes given (as far as the caller's
// buffer allows) and records the size of every buffer it was handed.
type chunkReader struct {
	data   []byte
	chunks []int
	bufs   []int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.bufs = append(r.bufs, len(p))
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.chunks) > 0 {
		n = min(n, r.chunks[0])
		r.chunks = r.chunks[1:]
	}
	n = copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func TestCopyStreamBuffers(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	// Quiet (100), a full small read, two busy reads, a short one, quiet again.
	r := &chunkReader{data: data, chunks: []int{100, quietRead, busyRead, busyRead, 10, 100}}
	var out bytes.Buffer
	n, err := copyStream(&out, r)
	if err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("copied %d octets, err %v; want all %d intact", n, err, len(data))
	}
	want := []int{quietRead, quietRead, busyRead, busyRead, busyRead, quietRead, quietRead}
	if !slices.Equal(r.bufs[:len(want)], want) {
		t.Fatalf("read buffers %v, want %v first", r.bufs, want)
	}
}

type failWriter struct {
	n   int
	err error
}

func (w failWriter) Write(p []byte) (int, error) { return min(w.n, len(p)), w.err }

func TestCopyStreamWriteErrors(t *testing.T) {
	boom := errors.New("boom")
	src := func() io.Reader { return bytes.NewReader(make([]byte, 100)) }
	if n, err := copyStream(failWriter{n: 40, err: boom}, src()); n != 40 || !errors.Is(err, boom) {
		t.Errorf("failing writer: %d, %v; want 40, boom", n, err)
	}
	if n, err := copyStream(failWriter{n: 40}, src()); n != 40 || !errors.Is(err, io.ErrShortWrite) {
		t.Errorf("short writer: %d, %v; want 40, io.ErrShortWrite", n, err)
	}
	rerr := errors.New("read failed")
	r := io.MultiReader(bytes.NewReader([]byte("abc")), iotest.ErrReader(rerr))
	var out bytes.Buffer
	if n, err := copyStream(&out, r); n != 3 || !errors.Is(err, rerr) || out.String() != "abc" {
		t.Errorf("failing reader: %d, %v, %q; want 3, the read error, \"abc\"", n, err, out.String())
	}
}
