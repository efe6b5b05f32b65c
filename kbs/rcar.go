package kbs

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/protocol"
)

// auth answers a Request with a Challenge and a session cookie.
func (s *Server) auth(w http.ResponseWriter, r *http.Request) error {
	var req protocol.Request
	if err := decodeJSON(r, &req); err != nil {
		var kerr *protocol.Error
		if errors.As(err, &kerr) && kerr.Kind == protocol.KindPayloadTooLarge {
			return err
		}
		return &protocol.Error{Kind: protocol.KindRcarAuth, Detail: err.Error(), Err: err}
	}
	if req.Version != protocol.Version {
		return protocol.Errorf(protocol.KindRcarAuth, "protocol version %q is not supported, expect %s", req.Version, protocol.Version)
	}
	if req.Tee == "" {
		return protocol.Errorf(protocol.KindRcarAuth, "tee missing")
	}
	sess, err := s.sessions.create(r.Context(), req.Tee)
	if err != nil {
		return err
	}
	s.setCookie(w, sess)
	writeJSON(w, http.StatusOK, protocol.Challenge{Nonce: sess.Nonce, ExtraParams: json.RawMessage(`""`)})
	return nil
}

func (s *Server) setCookie(w http.ResponseWriter, sess *session) {
	http.SetCookie(w, &http.Cookie{Name: protocol.SessionCookie, Value: sess.ID, Expires: sess.Expires,
		Path: "/", HttpOnly: true, Secure: !s.cfg.HTTPServer.InsecureHTTP, SameSite: http.SameSiteStrictMode})
}

// attest verifies the evidence of a challenged session and answers with
// the attestation token.
func (s *Server) attest(w http.ResponseWriter, r *http.Request) error {
	sess, err := s.sessionOf(r)
	if err != nil {
		return attestErr(err)
	}
	var att protocol.Attestation
	if err := decodeJSON(r, &att); err != nil {
		return attestErr(err)
	}
	if sess.Token != "" {
		// Trustee answers an attested session with its token again.
		s.setCookie(w, sess)
		writeJSON(w, http.StatusOK, protocol.AttestationToken{Token: sess.Token})
		return nil
	}
	reqs, err := s.verificationRequests(sess, &att)
	if err != nil {
		return attestErr(err)
	}
	token, claims, err := s.as.Evaluate(r.Context(), reqs, "")
	if err != nil {
		s.metrics.attestations.WithLabelValues(string(sess.Tee), "failure").Inc()
		var kerr *protocol.Error
		if errors.As(err, &kerr) {
			return err
		}
		return &protocol.Error{Kind: protocol.KindAttestation, Detail: err.Error(), Err: err}
	}
	s.metrics.attestations.WithLabelValues(string(sess.Tee), "success").Inc()
	if err := s.tokens.Remember(token, claims); err != nil {
		return err
	}
	if token, err = s.sessions.attested(r.Context(), sess.ID, token); err != nil {
		return err
	}
	s.setCookie(w, sess)
	writeJSON(w, http.StatusOK, protocol.AttestationToken{Token: token})
	return nil
}

func attestErr(err error) error {
	var kerr *protocol.Error
	if errors.As(err, &kerr) && kerr.Kind != protocol.KindSerde {
		return err
	}
	return &protocol.Error{Kind: protocol.KindRcarAttest, Detail: err.Error(), Err: err}
}

// sessionOf loads the live session named by the request's cookie.
func (s *Server) sessionOf(r *http.Request) (*session, error) {
	c, err := r.Cookie(protocol.SessionCookie)
	if err != nil {
		return nil, ErrNoSession
	}
	return s.sessions.get(r.Context(), c.Value)
}

// verificationRequests splits the composite evidence: the primary evidence
// is bound to runtime data that includes the additional evidence, each
// additional device's evidence to runtime data without it.
func (s *Server) verificationRequests(sess *session, att *protocol.Attestation) ([]attestation.Request, error) {
	if att.RuntimeData.Nonce != sess.Nonce {
		return nil, protocol.Errorf(protocol.KindRcarAttest, "nonce does not match the session's challenge")
	}
	if len(att.TeeEvidence.Primary) == 0 {
		return nil, protocol.Errorf(protocol.KindRcarAttest, "primary_evidence missing")
	}
	pub := att.RuntimeData.TeePubKey
	if _, _, err := jose.ParsePublicKey(pub, s.cfg.JWE.AllowRSA1_5); err != nil {
		return nil, protocol.Errorf(protocol.KindRcarAttest, "tee-pubkey: %v", err)
	}
	primary := attestation.Request{
		Tee:         sess.Tee,
		Evidence:    att.TeeEvidence.Primary,
		RuntimeData: protocol.RuntimeDataClaims(sess.Nonce, pub, &att.TeeEvidence.Additional),
	}
	if att.InitData != nil {
		if att.InitData.Format != "toml" {
			return nil, protocol.Errorf(protocol.KindRcarAttest, "init-data format %q is not supported (toml)", att.InitData.Format)
		}
		primary.InitData = &attestation.InitData{TOML: []byte(att.InitData.Body)}
	}
	reqs := []attestation.Request{primary}
	if att.TeeEvidence.Additional == "" {
		return reqs, nil
	}
	var more map[protocol.Tee]json.RawMessage
	if err := json.Unmarshal([]byte(att.TeeEvidence.Additional), &more); err != nil {
		return nil, protocol.Errorf(protocol.KindRcarAttest, "additional_evidence: %v", err)
	}
	for tee, ev := range more {
		reqs = append(reqs, attestation.Request{Tee: tee, Evidence: ev,
			RuntimeData: protocol.RuntimeDataClaims(sess.Nonce, pub, nil)})
	}
	return reqs, nil
}
