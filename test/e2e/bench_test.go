package e2e

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/kbs/client"
)

// BenchmarkRCAR measures full handshakes against the real kbs binary (HTTP
// over loopback, embedded durable store): auth + attest (sample TEE, policy
// appraisal, EAR signing) + one resource fetch (token verification,
// resource policy, JWE sealing and opening), with 1, 8 and 64 concurrent
// clients. The same run measures the crypto floor: the signatures, key
// agreements and AES-GCM operations one handshake needs, done alone with the
// same concurrency; %floor is throughput over floor throughput.
func BenchmarkRCAR(b *testing.B) {
	// The load generator shares the machine with the KBS: keep its GC
	// from taking CPU the measured system could use (the kbs binary sets
	// the same for itself). A real guest makes one handshake and never
	// collects; 64 of them in one process would, with their tiny heap.
	defer debug.SetGCPercent(debug.SetGCPercent(1000))
	// Sessions held by the clients (the default), stored durably in the
	// embedded store's log, and kept in memory.
	for _, sessions := range []string{"Cookie", "Embedded", "Memory"} {
		b.Run("sessions="+strings.ToLower(sessions), func(b *testing.B) {
			benchRCAR(b, fmt.Sprintf("session_storage_type = %q\n%s", sessions, benchKBS))
		})
	}
}

// benchKBS is the KBS configuration of the handshake benchmarks: quiet, and
// without the per-client rate limit and session cap, since the load
// generator is one client (one address) making thousands of handshakes.
const benchKBS = "[logging]\nlevel = \"warn\"\n[limits]\nrcar_rate = 1e9\nrcar_burst = 1000000000\nmax_sessions = 1000000000\n"

func benchRCAR(b *testing.B, extra string) {
	t := &testing.T{}
	data := b.TempDir()
	cfg, url := kbsConfig(t, data, "http", extra)
	k := startKBS(t, cfg, url, data, nil)
	defer k.stop()
	provisionSample(t, url, k.adminKey())
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/bench", []byte("benchmark secret"))
	if t.Failed() {
		b.Fatal("setup failed")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 128
	exchanges := handshakeExchanges(b, url, tr)
	echo, echoPID := echoServer(b)
	for _, clients := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			// The load generator runs its guests on one CPU, which they
			// do not fill: a second P would only spin beside the KBS,
			// taking CPU the measured system could use. The floor below
			// gets as many CPUs as the clients could keep busy.
			floorProcs := runtime.GOMAXPROCS(1)
			defer runtime.GOMAXPROCS(floorProcs)
			lat := make([]time.Duration, 0, b.N)
			var mu sync.Mutex
			serverCPU, clientCPU := procCPU(k.cmd.Process.Pid), testutil.SelfCPU()
			start := time.Now()
			run(b.N, clients, func() {
				t0 := time.Now()
				if err := handshake(url, tr); err != nil {
					b.Error(err)
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			serverCPU, clientCPU = procCPU(k.cmd.Process.Pid)-serverCPU, testutil.SelfCPU()-clientCPU
			b.StopTimer()
			transport, transportCPU := transportCost(b, echo, echoPID, b.N, clients, exchanges, tr)
			runtime.GOMAXPROCS(floorProcs)
			floor := bestFloor(b.N, clients)
			slices.Sort(lat)
			rate := float64(b.N) / elapsed.Seconds()
			b.ReportMetric(rate, "handshakes/s")
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
			b.ReportMetric(float64(b.N)/floor.Seconds(), "floor-handshakes/s")
			b.ReportMetric(100*floor.Seconds()/elapsed.Seconds(), "%floor")
			// Where the CPU went: the KBS, and the clients (this process).
			b.ReportMetric(float64(serverCPU.Microseconds())/float64(b.N), "server-cpu-us/op")
			b.ReportMetric(float64(clientCPU.Microseconds())/float64(b.N), "client-cpu-us/op")
			b.ReportMetric(float64(floor.Microseconds())*float64(min(clients, runtime.GOMAXPROCS(0)))/float64(b.N), "floor-cpu-us/op")
			// The transport floor (transport_bench_test.go): its CPU, and
			// the %floor of a KBS that cost the crypto floor and its
			// exchanges alone, one after the other.
			b.ReportMetric(float64(transportCPU.Microseconds())/float64(b.N), "transport-cpu-us/op")
			b.ReportMetric(100*floor.Seconds()/(floor.Seconds()+transport.Seconds()), "%floor-ceiling")
		})
	}
}

// procCPU is the user and system CPU time a process has used so far
// (Linux: /proc/PID/stat, in clock ticks of 10 ms).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// run calls fn n times from workers goroutines.
func run(n, workers int, fn func()) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				fn()
			}
		}()
	}
	wg.Wait()
}

// handshake is one guest: new TEE key, auth, attest, fetch and decrypt.
func handshake(url string, tr http.RoundTripper) error {
	c, err := client.New(url, sample.Attester{}, client.Options{HTTP: &http.Client{Transport: tr}})
	if err != nil {
		return err
	}
	got, err := c.GetResource(context.Background(), "default/key/bench")
	if err != nil {
		return err
	}
	if string(got) != "benchmark secret" {
		return fmt.Errorf("got %q", got)
	}
	return nil
}

// bestFloor is the fastest of three floor measurements, each with as many
// workers as the clients could keep busy (no more than the CPUs): the
// floor is the best the machine does, not one noisy sample of it.
func bestFloor(n, clients int) time.Duration {
	workers := min(clients, runtime.GOMAXPROCS(0))
	best := measureFloor(n, workers)
	for range 2 {
		best = min(best, measureFloor(n, workers))
	}
	return best
}

// measureFloor does n handshakes' worth of cryptography with workers
// goroutines: the guest's key generation, the EAR token's ES256 signature
// and its verification at the fetch, the JWE's ECDH-ES (ephemeral key and
// agreement on both sides) and its AES-GCM seal and open.
func measureFloor(n, workers int) time.Duration {
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	msg := make([]byte, 1024)
	digest := sha256.Sum256(msg)
	start := time.Now()
	run(n, workers, func() {
		guest, _ := ecdh.P256().GenerateKey(rand.Reader)
		sig, _ := ecdsa.SignASN1(rand.Reader, signer, digest[:])
		if !ecdsa.VerifyASN1(&signer.PublicKey, digest[:], sig) {
			panic("floor: verify")
		}
		eph, _ := ecdh.P256().GenerateKey(rand.Reader)
		z1, _ := eph.ECDH(guest.PublicKey())
		z2, _ := guest.ECDH(eph.PublicKey())
		cek := sha256.Sum256(z1)
		block, _ := aes.NewCipher(cek[:])
		gcm, _ := cipher.NewGCM(block)
		nonce := make([]byte, 12)
		ct := gcm.Seal(nil, nonce, msg[:16], nil)
		kek := sha256.Sum256(z2)
		block2, _ := aes.NewCipher(kek[:])
		gcm2, _ := cipher.NewGCM(block2)
		gcm2.Open(nil, nonce, ct, nil)
	})
	return time.Since(start)
}
