package kbs

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/store"
)

// SessionNamespace is the store namespace of RCAR sessions.
const SessionNamespace = "sessions"

// Session errors.
var (
	ErrNoSession      = errors.New("no session cookie")
	ErrUnknownSession = errors.New("session not found")
	ErrSessionExpired = errors.New("session expired")
)

// session is one RCAR exchange: challenged, then attested.
type session struct {
	ID      string       `json:"id"`
	Tee     protocol.Tee `json:"tee"`
	Nonce   string       `json:"nonce"`
	Expires time.Time    `json:"expires"`
	Token   string       `json:"token,omitempty"`
}

type sessions struct {
	store   store.Store
	timeout time.Duration
	now     func() time.Time
}

// create starts a session with a fresh 32-byte nonce.
func (s *sessions) create(ctx context.Context, tee protocol.Tee) (*session, error) {
	id := make([]byte, 16)
	nonce := make([]byte, 32)
	rand.Read(id)
	rand.Read(nonce)
	sess := &session{ID: hex.EncodeToString(id), Tee: tee, Nonce: base64.StdEncoding.EncodeToString(nonce),
		Expires: s.now().Add(s.timeout).UTC()}
	b, _ := json.Marshal(sess)
	if err := s.store.Put(ctx, SessionNamespace, sess.ID, b); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	return sess, nil
}

// get loads a live session; an expired one is deleted.
func (s *sessions) get(ctx context.Context, id string) (*session, error) {
	if !validSessionID(id) {
		return nil, ErrUnknownSession
	}
	b, err := s.store.Get(ctx, SessionNamespace, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnknownSession
	}
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	var sess session
	if err := json.Unmarshal(b, &sess); err != nil {
		return nil, fmt.Errorf("session: stored %s: %w", id, err)
	}
	if !s.now().Before(sess.Expires) {
		s.store.Delete(ctx, SessionNamespace, id)
		return nil, ErrSessionExpired
	}
	return &sess, nil
}

// attested records the token of a session, unless a concurrent attestation
// of the same session won; the token stored is returned.
func (s *sessions) attested(ctx context.Context, id, token string) (string, error) {
	stored := token
	err := s.store.Update(ctx, SessionNamespace, id, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, ErrUnknownSession
		}
		var sess session
		if err := json.Unmarshal(old, &sess); err != nil {
			return nil, err
		}
		if sess.Token != "" {
			stored = sess.Token
			return old, nil
		}
		stored = token
		sess.Token = token
		return json.Marshal(sess)
	})
	return stored, err
}

// sweep deletes expired sessions.
func (s *sessions) sweep(ctx context.Context) (int, error) {
	ids, err := s.store.List(ctx, SessionNamespace)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		if _, err := s.get(ctx, id); errors.Is(err, ErrSessionExpired) {
			n++
		}
	}
	return n, nil
}

func validSessionID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}
