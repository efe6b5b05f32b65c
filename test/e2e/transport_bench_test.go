package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// The transport floor: what a handshake's three HTTP exchanges cost with
// nothing behind them. The same net/http server and client the KBS and its
// guests use, in two processes as theirs are, exchange bodies of the sizes
// a handshake carries at the same concurrency; the crypto floor plus this
// is what a KBS on net/http could not go below on this machine.

// echoEnv makes the test binary an echo server (see TestMain).
const echoEnv = "COCOON_BENCH_ECHO"

func TestMain(m *testing.M) {
	if os.Getenv(echoEnv) != "" {
		serveEcho()
		return
	}
	os.Exit(m.Run())
}

// serveEcho answers every request, once its body is read, with n bytes of
// JSON (the query's n), and prints its address first.
func serveEcho() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println(l.Addr())
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Type", "application/json")
		w.Write(bytes.Repeat([]byte{' '}, max(n, 0)))
	}))
}

// exchange is one request of a handshake, by its sizes.
type exchange struct {
	method        string
	req, response int64
}

// recorder notes the sizes of the exchanges that go through it, the
// answers' as read (a chunked one has no length).
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen []exchange
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &counted{ReadCloser: resp.Body, done: func(n int64) {
		r.mu.Lock()
		r.seen = append(r.seen, exchange{req.Method, max(req.ContentLength, 0), n})
		r.mu.Unlock()
	}}
	return resp, nil
}

// counted counts what is read from a body and reports it on Close.
type counted struct {
	io.ReadCloser
	n    int64
	done func(int64)
}

func (c *counted) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *counted) Close() error {
	c.done(c.n)
	return c.ReadCloser.Close()
}

// handshakeExchanges records the exchanges of one handshake against url.
func handshakeExchanges(b *testing.B, url string, tr http.RoundTripper) []exchange {
	rec := &recorder{next: tr}
	if err := handshake(url, rec); err != nil {
		b.Fatal(err)
	}
	return rec.seen
}

// echoServer starts the echo server process; its address and pid.
func echoServer(b *testing.B) (string, int) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), echoEnv+"=1", "GOGC=400")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	return "http://" + addr[:len(addr)-1], cmd.Process.Pid
}

// transportCost makes n handshakes' worth of exchanges with workers
// clients against the echo server at url (pid); the wall time and the
// CPU both processes used.
func transportCost(b *testing.B, url string, pid, n, workers int, ex []exchange, tr http.RoundTripper) (time.Duration, time.Duration) {
	c := &http.Client{Transport: tr}
	bodies := make([][]byte, len(ex))
	for i, e := range ex {
		bodies[i] = bytes.Repeat([]byte{' '}, int(e.req))
	}
	cpu0, self0, start := procCPU(pid), testutil.SelfCPU(), time.Now()
	run(n, workers, func() {
		for i, e := range ex {
			req, _ := http.NewRequest(e.method, fmt.Sprintf("%s/?n=%d", url, e.response), bytes.NewReader(bodies[i]))
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	return time.Since(start), procCPU(pid) - cpu0 + testutil.SelfCPU() - self0
}
