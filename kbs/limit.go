package kbs

import (
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/cocoon-cc/cocoon/protocol"
)

// maxClients bounds the buckets kept: past it, the refilled ones (which
// are as good as absent) are dropped, and if that is not enough, all.
const maxClients = 1 << 16

// clientLimiter is a token bucket per client address: an IPv4 address,
// or an IPv6 /64, which one host is commonly given whole.
type clientLimiter struct {
	rate, burst float64
	now         func() time.Time

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newClientLimiter(l LimitsConfig, now func() time.Time) *clientLimiter {
	return &clientLimiter{rate: l.RCARRate, burst: float64(l.RCARBurst), now: now, buckets: map[netip.Prefix]*bucket{}}
}

// clientOf is the bucket key of a request's remote address; addresses
// that do not parse share the zero key.
func clientOf(remote string) netip.Prefix {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Prefix{}
	}
	a := ap.Addr().Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// take spends one of the client's tokens; without one it says how long
// until the next.
func (l *clientLimiter) take(remote string) (wait time.Duration, ok bool) {
	key, now := clientOf(remote), l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxClients {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / l.rate * float64(time.Second)), false
	}
	b.tokens--
	return 0, true
}

// prune drops the buckets that have refilled; the caller holds l.mu.
func (l *clientLimiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxClients {
		clear(l.buckets)
	}
}

// sessionRetry is what a client is told to wait when the sessions are at
// their cap: about when the sweeper next deletes expired ones.
const sessionRetry = time.Minute

// tooMany answers 429 with a Retry-After of wait (whole seconds, at
// least one).
func tooMany(w http.ResponseWriter, wait time.Duration, format string, args ...any) error {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
	return protocol.Errorf(protocol.KindTooManyRequests, format, args...)
}

// admit charges an RCAR call to its client and refuses it when the
// client's bucket is empty or, for a call that would store a new session,
// when the sessions are at their cap.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) error {
	if wait, ok := s.limiter.take(r.RemoteAddr); !ok {
		return tooMany(w, wait, "over %g RCAR requests a second from %s", s.limiter.rate, clientOf(r.RemoteAddr))
	}
	return nil
}

// sessionRoom refuses a new session while the attested ones are at the cap.
func (s *Server) sessionRoom(w http.ResponseWriter) error {
	if n := s.sessions.live.Load(); n >= s.sessions.max {
		return tooMany(w, sessionRetry, "%d attested sessions, the most this KBS keeps; try again later", n)
	}
	return nil
}
