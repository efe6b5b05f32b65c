package kbs

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/protocol"
)

// auth answers a Request with a Challenge and a session cookie.
func (s *Server) auth(w http.ResponseWriter, r *http.Request) error {
	var req protocol.Request
	if err := decodeJSON(r, protocol.KindAttestation, &req); err != nil {
		return err
	}
	if req.Version != protocol.Version {
		return protocol.Errorf(protocol.KindAttestation, "RCAR auth: protocol version %q is not supported, expect %s", req.Version, protocol.Version)
	}
	if req.Tee == "" {
		return protocol.Errorf(protocol.KindAttestation, "RCAR auth: tee missing")
	}
	if err := s.sessionRoom(w); err != nil {
		return err
	}
	c, err := s.sessions.create(req.Tee)
	if err != nil {
		return err
	}
	nonce := c.Nonce
	if ch, ok := s.as.(challenger); ok {
		if nonce, err = ch.Challenge(r.Context(), c.Tee, c.Nonce); err != nil {
			return &protocol.Error{Kind: protocol.KindAttestation, Detail: "RCAR auth: " + err.Error(), Err: err}
		}
	}
	s.setCookie(w, c, "")
	writeJSON(w, http.StatusOK, protocol.Challenge{Nonce: nonce, ExtraParams: json.RawMessage(`""`)})
	return nil
}

// setCookie sets the session cookie: the id, and after a dot the token of
// a session the client holds (see session). Neither needs quoting, so the
// cookie is written as http.SetCookie would, without checking a value of
// KiBs byte by byte.
func (s *Server) setCookie(w http.ResponseWriter, c *challenge, heldToken string) {
	secure := "; Secure"
	if s.cfg.HTTPServer.InsecureHTTP {
		secure = ""
	}
	dot := ""
	if heldToken != "" {
		dot = "."
	}
	w.Header().Add("Set-Cookie", protocol.SessionCookie+"="+c.ID+dot+heldToken+"; Path=/; Expires="+
		c.Expires.UTC().Format(http.TimeFormat)+"; HttpOnly"+secure+"; SameSite=Strict")
}

// attest verifies the evidence of a challenged session and answers with
// the attestation token.
func (s *Server) attest(w http.ResponseWriter, r *http.Request) error {
	c, sess, err := s.sessionOf(r, s.sessions.toAttest)
	if refused(err) {
		return &protocol.Error{Kind: protocol.KindAttestation, Detail: "RCAR attest: " + err.Error(), Err: err}
	}
	if err != nil {
		return err
	}
	var att protocol.Attestation
	if err := decodeJSON(r, protocol.KindAttestation, &att); err != nil {
		return err
	}
	if sess != nil && s.valid(sess) {
		// Trustee answers an attested session with its token again.
		s.setCookie(w, c, sess.heldToken())
		writeJSON(w, http.StatusOK, protocol.AttestationToken{Token: sess.Token})
		return nil
	}
	s.sessions.withNonce(c)
	if err := s.sessionRoom(w); err != nil {
		return err
	}
	reqs, err := s.verificationRequests(c, &att)
	if err != nil {
		return err
	}
	token, claims, err := s.as.Evaluate(r.Context(), reqs, "")
	if err != nil {
		s.metrics.attestation(s.now(), string(c.Tee), nil)
		var kerr *protocol.Error
		if errors.As(err, &kerr) {
			return err
		}
		return &protocol.Error{Kind: protocol.KindAttestation, Detail: err.Error(), Err: err}
	}
	s.metrics.attestation(s.now(), string(c.Tee), claims)
	s.tokens.Remember(token, claims)
	sess, err = s.sessions.attested(r.Context(), c, token)
	if err != nil {
		return err
	}
	s.setCookie(w, c, sess.heldToken())
	writeJSON(w, http.StatusOK, protocol.AttestationToken{Token: sess.Token})
	return nil
}

// challenger is an attestation service whose verifiers may issue
// challenges of their own (the built-in one).
type challenger interface {
	Challenge(ctx context.Context, tee protocol.Tee, base string) (string, error)
	CheckChallenge(tee protocol.Tee, nonce, base string) error
}

// checkChallenge reports whether nonce answers the session's challenge.
func (s *Server) checkChallenge(c *challenge, nonce string) error {
	if ch, ok := s.as.(challenger); ok {
		return ch.CheckChallenge(c.Tee, nonce, c.Nonce)
	}
	if !hmac.Equal([]byte(nonce), []byte(c.Nonce)) {
		return errors.New("nonce does not match the session's challenge")
	}
	return nil
}

// sessionOf reads the request's session cookie with get (a sessions
// method): its live challenge, and the attested session if there is one.
func (s *Server) sessionOf(r *http.Request, get func(context.Context, string) (*challenge, *session, error)) (*challenge, *session, error) {
	cookie, ok := sessionCookie(r.Header)
	if !ok {
		return nil, nil, ErrNoSession
	}
	return get(r.Context(), cookie)
}

// sessionCookie is the value of the first session cookie in h, found as
// Request.Cookie finds it but without checking every cookie's value byte
// by byte: a held session's is KiBs, and sessions.get parses it strictly.
func sessionCookie(h http.Header) (string, bool) {
	for _, line := range h["Cookie"] {
		for pair := range strings.SplitSeq(line, ";") {
			name, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if ok && name == protocol.SessionCookie {
				if len(value) > 1 && value[0] == '"' && value[len(value)-1] == '"' {
					value = value[1 : len(value)-1]
				}
				return value, true
			}
		}
	}
	return "", false
}

// valid reports whether an attested session's token still holds: a stored
// one does (it is what this KBS stored), a held one if it verifies.
func (s *Server) valid(sess *session) bool {
	if !sess.held {
		return true
	}
	_, _, err := s.tokens.Verify(sess.Token)
	return err == nil
}

// verificationRequests splits the composite evidence: the primary evidence
// is bound to runtime data that includes the additional evidence, each
// additional device's evidence to runtime data without it.
func (s *Server) verificationRequests(c *challenge, att *protocol.Attestation) ([]attestation.Request, error) {
	if err := s.checkChallenge(c, att.RuntimeData.Nonce); err != nil {
		return nil, protocol.Errorf(protocol.KindAttestation, "RCAR attest: %v", err)
	}
	if len(att.TeeEvidence.Primary) == 0 {
		return nil, protocol.Errorf(protocol.KindAttestation, "RCAR attest: primary_evidence missing")
	}
	pub := att.RuntimeData.TeePubKey
	if _, _, err := jose.ParsePublicKey(pub, s.cfg.JWE.AllowRSA1_5); err != nil {
		return nil, protocol.Errorf(protocol.KindAttestation, "RCAR attest: tee-pubkey: %v", err)
	}
	// The nonce is the session's (or the challenge its TEE's verifier
	// issued for it, checked above).
	nonce := att.RuntimeData.Nonce
	primary := attestation.Request{
		Tee:           c.Tee,
		Evidence:      att.TeeEvidence.Primary,
		RuntimeData:   protocol.RuntimeDataClaims(nonce, pub, &att.TeeEvidence.Additional),
		HashAlgorithm: c.Tee.RuntimeDataHash(),
	}
	if att.InitData != nil {
		if att.InitData.Format != "toml" {
			return nil, protocol.Errorf(protocol.KindAttestation, "RCAR attest: init-data format %q is not supported (toml)", att.InitData.Format)
		}
		primary.InitData = &attestation.InitData{TOML: []byte(att.InitData.Body)}
	}
	reqs := []attestation.Request{primary}
	if att.TeeEvidence.Additional == "" {
		return reqs, nil
	}
	var more map[protocol.Tee]json.RawMessage
	if err := json.Unmarshal([]byte(att.TeeEvidence.Additional), &more); err != nil {
		return nil, protocol.Errorf(protocol.KindAttestation, "RCAR attest: additional_evidence: %v", err)
	}
	// In a fixed order, so that each device keeps its submodule (gpu0, ...).
	for _, tee := range slices.Sorted(maps.Keys(more)) {
		reqs = append(reqs, attestation.Request{Tee: tee, Evidence: more[tee],
			RuntimeData: protocol.RuntimeDataClaims(nonce, pub, nil), HashAlgorithm: tee.RuntimeDataHash()})
	}
	return reqs, nil
}
