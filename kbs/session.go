package kbs

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/store"
)

// SessionNamespace is the store namespace of attested RCAR sessions.
const SessionNamespace = "sessions"

// Session errors.
var (
	ErrNoSession      = errors.New("no session cookie")
	ErrUnknownSession = errors.New("session not found")
	ErrSessionExpired = errors.New("session expired")
)

// refused reports whether err refuses a session cookie, rather than
// failing to read a stored session.
func refused(err error) bool {
	return errors.Is(err, ErrNoSession) || errors.Is(err, ErrUnknownSession) || errors.Is(err, ErrSessionExpired)
}

// challenge is an RCAR session before attestation. It is not stored: the
// session id (the cookie) carries the TEE and the expiry, and the nonce is
// an HMAC of the id under a key the store keeps. A challenge thus costs no
// write, cannot be forged or extended by the client, and outlives a
// restart.
type challenge struct {
	ID      string
	Tee     protocol.Tee
	Nonce   string
	Expires time.Time
}

// session is an attested RCAR session. The client holds it (the default,
// session_storage_type = "Cookie"): its cookie is the session id, a dot
// and the token, so the KBS writes nothing, and the session survives a
// restart and reaches every replica. Or it is stored under its id as its
// token alone; sessions stored by earlier versions are the JSON object
// {"token": ...}. A held session proves no more than its token does as a
// bearer token, which the KBS accepts too: the token is verified (or found
// among those this process signed) on every use.
type session struct {
	Token string `json:"token"`
	held  bool
}

// heldToken is the token of a session the client holds, "" for a stored
// one.
func (sess *session) heldToken() string {
	if sess.held {
		return sess.Token
	}
	return ""
}

// decodeSession reads a stored session.
func decodeSession(b []byte) (session, error) {
	var sess session
	if len(b) > 0 && b[0] == '{' {
		err := json.Unmarshal(b, &sess)
		return sess, err
	}
	sess.Token = string(b)
	return sess, nil
}

// A session id is 16 bytes, 32 hex digits as Trustee's: the TEE's code,
// the expiry in Unix seconds (big-endian), and 11 random bytes.
const (
	idSize   = 16
	idRandom = 5
)

type sessions struct {
	store   store.Store
	key     []byte // of the nonce HMAC
	timeout time.Duration
	now     func() time.Time
	// live counts the attested sessions stored (by this process, and
	// found at start); max is the cap on them. Challenges are not stored
	// and cost nothing to keep.
	live atomic.Int64
	max  int64
	macs sync.Pool // of HMAC-SHA256 under key
	// held: clients hold their attested sessions (see session); nothing
	// is stored.
	held bool
}

// count sets live from the store, at start.
func (s *sessions) count(ctx context.Context) error {
	ids, err := s.store.List(ctx, SessionNamespace)
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	s.live.Store(int64(len(ids)))
	return nil
}

// remove deletes a stored session, counting it if it was there.
func (s *sessions) remove(ctx context.Context, id string) error {
	existed := false
	err := s.store.Update(ctx, SessionNamespace, id, func(old []byte) ([]byte, error) {
		existed = old != nil
		return nil, nil
	})
	if existed && err == nil {
		s.live.Add(-1)
	}
	return err
}

// create starts a session.
func (s *sessions) create(tee protocol.Tee) (*challenge, error) {
	code, ok := tee.Code()
	if !ok {
		return nil, fmt.Errorf("session: unknown tee %q", tee)
	}
	exp := s.now().Add(s.timeout).Truncate(time.Second)
	id := make([]byte, idSize)
	id[0] = code
	binary.BigEndian.PutUint32(id[1:idRandom], uint32(exp.Unix()))
	rand.Read(id[idRandom:])
	return &challenge{ID: hex.EncodeToString(id), Tee: tee, Nonce: s.nonce(id), Expires: exp.UTC()}, nil
}

func (s *sessions) nonce(id []byte) string {
	// HMACs are reused: a new one is two hashes and their key schedule,
	// and every handshake needs two nonces.
	m, ok := s.macs.Get().(hash.Hash)
	if !ok {
		m = hmac.New(sha256.New, s.key)
	}
	defer s.macs.Put(m)
	m.Reset()
	m.Write(id)
	var sum [sha256.Size]byte
	return base64.StdEncoding.EncodeToString(m.Sum(sum[:0]))
}

// withNonce sets the nonce a challenge was issued with.
func (s *sessions) withNonce(c *challenge) {
	b, _ := hex.DecodeString(c.ID)
	c.Nonce = s.nonce(b)
}

// parse reads a session id's TEE and expiry, refusing an expired one.
func (s *sessions) parse(id string) (*challenge, error) {
	b, err := hex.DecodeString(id)
	if err != nil || len(b) != idSize {
		return nil, ErrUnknownSession
	}
	tee, ok := protocol.TeeOfCode(b[0])
	if !ok {
		return nil, ErrUnknownSession
	}
	exp := time.Unix(int64(binary.BigEndian.Uint32(b[1:idRandom])), 0).UTC()
	if !s.now().Before(exp) {
		return nil, ErrSessionExpired
	}
	return &challenge{ID: id, Tee: tee, Expires: exp}, nil
}

// get reads a session cookie: the challenge, and the attested session
// (nil if the challenge was not answered yet). An expired stored session
// is deleted.
func (s *sessions) get(ctx context.Context, cookie string) (*challenge, *session, error) {
	c, sess, err := s.read(ctx, cookie)
	if err != nil || sess != nil {
		return c, sess, err
	}
	sess, err = s.stored(ctx, c.ID)
	return c, sess, err
}

// toAttest reads the session cookie of an attestation request: as get,
// but where clients hold their sessions, one that holds none is taken as
// not attested without asking the store (a round trip to a shared one).
// Such a KBS stores only the tokens that cannot be a cookie, and storing
// one answers with any stored before (attested), so a re-attestation
// still gets its first token.
func (s *sessions) toAttest(ctx context.Context, cookie string) (*challenge, *session, error) {
	if s.held {
		return s.read(ctx, cookie)
	}
	return s.get(ctx, cookie)
}

// read parses a session cookie: its challenge, and the session it holds
// (nil when it holds none).
func (s *sessions) read(ctx context.Context, cookie string) (*challenge, *session, error) {
	id, token, held := strings.Cut(cookie, ".")
	c, err := s.parse(id)
	if err != nil {
		if errors.Is(err, ErrSessionExpired) && !held {
			s.remove(ctx, id)
		}
		return nil, nil, err
	}
	if held {
		return c, &session{Token: token, held: true}, nil
	}
	return c, nil, nil
}

// stored loads the attested session of a live id; nil if there is none.
func (s *sessions) stored(ctx context.Context, id string) (*session, error) {
	b, err := s.store.Get(ctx, SessionNamespace, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	sess, err := decodeSession(b)
	if err != nil {
		return nil, fmt.Errorf("session: stored %s: %w", id, err)
	}
	return &sess, nil
}

// attested records the token of a challenge answered and returns the
// session: held by the client (its cookie is to carry the token), or
// stored, unless a concurrent attestation of the same session won, whose
// session is returned.
func (s *sessions) attested(ctx context.Context, c *challenge, token string) (*session, error) {
	if s.held && cookieSafe(token) {
		return &session{Token: token, held: true}, nil
	}
	stored, added, err := store.Insert(ctx, s.store, SessionNamespace, c.ID, []byte(token))
	if err != nil {
		return nil, err
	}
	if added {
		s.live.Add(1)
		return &session{Token: token}, nil
	}
	sess, err := decodeSession(stored)
	if err != nil {
		return nil, fmt.Errorf("session: stored %s: %w", c.ID, err)
	}
	return &sess, nil
}

// cookieSafe reports whether a token can be a cookie value as it is: a
// compact JWS is (base64url and dots), and so needs no quoting or
// checking when the cookie is written.
func cookieSafe(token string) bool {
	for i := range len(token) {
		if !jwsByte[token[i]] {
			return false
		}
	}
	return token != ""
}

// jwsByte marks the bytes of a compact JWS: a table, since a token is
// KiBs.
var jwsByte = func() (t [256]bool) {
	for _, b := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") {
		t[b] = true
	}
	return t
}()

// sweep deletes expired sessions.
func (s *sessions) sweep(ctx context.Context) (int, error) {
	ids, err := s.store.List(ctx, SessionNamespace)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		if _, err := s.parse(id); err != nil {
			if err := s.remove(ctx, id); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}
