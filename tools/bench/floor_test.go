package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// BenchmarkHopFloor measures what one extra hop of the tunnel path costs at the
// least, on this machine: 1 MiB carried over one loopback connection, written in
// 32 KiB pieces (an SSH channel's packet size) and read by a second goroutine, with
// the CPU of both ends (user + system, getrusage) per MiB.
//
//   - tcp: plain loopback TCP, the copy into and out of the kernel;
//   - tls: the same under TLS 1.3 with AES-128-GCM, as porthole connect → tunneld
//     and tunneld → agent run it: the sender seals, the receiver opens.
//
// Compared with direct SSH (client → sshd, one connection), the tunnel path has
// two more connections (porthole connect → tunneld → agent), each at least one
// "tls" here, with no WebSocket, protobuf, relay scheduling or service logic at
// all. docs/benchmarks.md turns this into the best ratio one host can show.
func BenchmarkHopFloor(b *testing.B) {
	b.Run("tcp", func(b *testing.B) { hopFloor(b, false) })
	b.Run("tls", func(b *testing.B) { hopFloor(b, true) })
}

func hopFloor(b *testing.B, useTLS bool) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var cfg *tls.Config
	if useTLS {
		cfg = floorTLSConfig(b)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		if cfg != nil {
			tc := tls.Server(c, cfg)
			tc.Handshake() // a failure shows as the client's
			c = tc
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	if cfg != nil {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) // the floor's own certificate
		if err := tc.Handshake(); err != nil {
			b.Fatal(err)
		}
		c = tc
	}
	defer c.Close()
	s, ok := <-accepted
	if !ok {
		b.Fatal("accept failed")
	}
	defer s.Close()

	const mib = 1 << 20
	piece := make([]byte, 32<<10)
	rand.Read(piece)
	read := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(io.Discard, io.LimitReader(s, int64(b.N)*mib), make([]byte, 64<<10))
		read <- err
	}()
	b.SetBytes(mib)
	cpu0, _ := rusage()
	b.ResetTimer()
	for range b.N {
		for range mib / len(piece) {
			if _, err := c.Write(piece); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := <-read; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu1, _ := rusage()
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/MiB")
}

// floorTLSConfig is a server config with a throwaway P-256 certificate, TLS 1.3 and
// AES-128-GCM (what Go picks on CPUs with AES instructions, as here).
func floorTLSConfig(b *testing.B) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS13,
	}
}
