// Package restful is the standalone attestation service's REST API,
// Trustee's restful-as: a KBS (Cocoon's or Trustee's) or a relying party
// posts evidence and gets an EAR token back.
package restful

import (
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/rvps"
)

// MaxBody bounds a request body.
const MaxBody = 8 << 20

// Authorizer guards the administrative endpoints (policies, reference
// values); it returns who called, for the audit line.
type Authorizer interface {
	Authorize(r *http.Request) (string, error)
}

// Server serves the REST API.
type Server struct {
	as    *attestation.Service
	rvps  *rvps.Service
	admin Authorizer
	log   *slog.Logger
}

// NewServer returns the API over an attestation service and its RVPS.
func NewServer(as *attestation.Service, rv *rvps.Service, admin Authorizer, log *slog.Logger) *Server {
	return &Server{as: as, rvps: rv, admin: admin, log: log}
}

// Handler routes the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /attestation", s.attestation)
	mux.HandleFunc("POST /challenge", s.challenge)
	mux.HandleFunc("POST /policy", s.admin1(s.setPolicy))
	mux.HandleFunc("GET /policy", s.admin1(s.listPolicies))
	mux.HandleFunc("POST /reference-value", s.admin1(s.registerReferenceValue))
	mux.HandleFunc("GET /reference-value/{name}", s.admin1(s.getReferenceValue))
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"keys": []any{s.as.Signer().Public()}})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {})
	return http.MaxBytesHandler(mux, MaxBody)
}

// errBadRequest marks the client's mistakes.
var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// fail answers {"error": ...}: 400 for the client's mistakes and rejected
// evidence, 401 for refused admin calls, 500 for our own failures.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, code int, err error) {
	if code >= 500 {
		s.log.Error("request failed", "path", r.URL.Path, "err", err)
		err = errors.New("internal error")
	} else {
		s.log.Info("request refused", "path", r.URL.Path, "err", err)
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func statusOf(err error) int {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errBadRequest), errors.Is(err, attestation.ErrVerification),
		errors.Is(err, attestation.ErrRuntimeData), errors.Is(err, attestation.ErrHashAlgorithm),
		errors.Is(err, attestation.ErrNoEvidence), errors.Is(err, attestation.ErrNoTrustClaims),
		errors.Is(err, attestation.ErrBadTrustClaims), errors.Is(err, attestation.ErrPolicyEvaluated),
		errors.Is(err, policy.ErrInvalid), errors.Is(err, policy.ErrNotFound),
		errors.Is(err, rvps.ErrMalformedMessage), errors.Is(err, rvps.ErrUnsupportedType),
		errors.Is(err, rvps.ErrUnsupportedVersion):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func decode(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return badRequest("malformed JSON: %v", err)
	}
	return nil
}

func (s *Server) attestation(w http.ResponseWriter, r *http.Request) {
	var req protocol.ASAttestationRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, statusOf(err), err)
		return
	}
	reqs, err := Requests(req.VerificationRequests)
	if err != nil {
		s.fail(w, r, statusOf(err), err)
		return
	}
	id := attestation.DefaultPolicyID
	if len(req.PolicyIDs) > 0 {
		id = req.PolicyIDs[0]
	}
	token, _, err := s.as.Evaluate(r.Context(), reqs, id)
	if err != nil {
		s.fail(w, r, statusOf(err), err)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, token)
}

// Requests converts the wire requests into the service's.
func Requests(in []protocol.ASVerificationRequest) ([]attestation.Request, error) {
	out := make([]attestation.Request, 0, len(in))
	for i, v := range in {
		tee, err := protocol.ParseTee(v.Tee)
		if err != nil {
			return nil, badRequest("request %d: %v", i, err)
		}
		ev, err := b64url(v.Evidence)
		if err != nil || !json.Valid(ev) {
			return nil, badRequest("request %d: evidence must be base64url of JSON", i)
		}
		r := attestation.Request{Tee: tee, Evidence: ev, HashAlgorithm: v.RuntimeDataHashAlgorithm}
		if err := runtimeData(&r, v.RuntimeData); err != nil {
			return nil, badRequest("request %d: runtime_data: %v", i, err)
		}
		if err := initData(&r, v.InitData); err != nil {
			return nil, badRequest("request %d: init_data: %v", i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func runtimeData(r *attestation.Request, rd *protocol.ASRuntimeData) error {
	switch {
	case rd == nil:
	case rd.Raw != nil:
		b, err := b64url(*rd.Raw)
		if err != nil {
			return err
		}
		r.RawRuntimeData = b
	case rd.Structured != nil:
		var m map[string]any
		if err := json.Unmarshal(rd.Structured, &m); err != nil {
			return fmt.Errorf("structured runtime data must be a JSON object: %v", err)
		}
		r.RuntimeData = m
	}
	return nil
}

func initData(r *attestation.Request, id *protocol.ASInitData) error {
	switch {
	case id == nil:
	case id.Digest != nil:
		b, err := b64url(*id.Digest)
		if err != nil {
			return err
		}
		r.InitData = &attestation.InitData{Digest: b}
	case id.TOML != nil:
		r.InitData = &attestation.InitData{TOML: []byte(*id.TOML)}
	}
	return nil
}

func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func (s *Server) challenge(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Tee string `json:"tee"`
	}
	if err := decode(r, &req); err != nil {
		s.fail(w, r, statusOf(err), err)
		return
	}
	if _, err := protocol.ParseTee(req.Tee); err != nil {
		s.fail(w, r, http.StatusBadRequest, err)
		return
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	io.WriteString(w, base64.StdEncoding.EncodeToString(nonce))
}

// admin1 authorizes an administrative call before running fn.
func (s *Server) admin1(fn func(http.ResponseWriter, *http.Request, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, err := s.admin.Authorize(r)
		if err != nil {
			s.log.Warn("audit: admin call refused", "method", r.Method, "target", r.RequestURI, "remote", r.RemoteAddr, "reason", err.Error())
			s.fail(w, r, http.StatusUnauthorized, err)
			return
		}
		if err := fn(w, r, who); err != nil {
			s.fail(w, r, statusOf(err), err)
		}
	}
}

func (s *Server) setPolicy(w http.ResponseWriter, r *http.Request, who string) error {
	var req protocol.ASSetPolicyRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	text, err := b64url(req.Policy)
	if err != nil || req.PolicyID == "" {
		return badRequest("policy_id and base64url policy are required")
	}
	if err := s.as.Policies().Set(r.Context(), req.PolicyID, string(text)); err != nil {
		return err
	}
	s.log.Info("audit", "action", "set-attestation-policy", "who", who, "policy_id", req.PolicyID)
	return nil
}

// listPolicies answers policy ids with the SHA-384 of their text.
func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request, _ string) error {
	ids, err := s.as.Policies().List(r.Context())
	if err != nil {
		return err
	}
	out := map[string]string{}
	for _, id := range ids {
		text, err := s.as.Policies().Get(r.Context(), id)
		if err != nil {
			return err
		}
		sum := sha512.Sum384([]byte(text))
		out[id] = hex.EncodeToString(sum[:])
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) registerReferenceValue(w http.ResponseWriter, r *http.Request, who string) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	names, err := s.rvps.Register(r.Context(), b)
	if err != nil {
		return err
	}
	s.log.Info("audit", "action", "register-reference-value", "who", who, "names", names)
	return nil
}

func (s *Server) getReferenceValue(w http.ResponseWriter, r *http.Request, _ string) error {
	return s.rvps.ServeHTTPValue(w, r, r.PathValue("name"))
}
