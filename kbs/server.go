// Package kbs is the Key Broker Service: it speaks Trustee's KBS protocol
// 0.4.0 (RCAR handshake, resources sealed to the TEE key in a JWE, admin
// endpoints) over HTTP, with a built-in attestation service.
package kbs

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	jsonv2 "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cocoon-cc/cocoon/attestation"
	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/rvps"
	"github.com/cocoon-cc/cocoon/store"
)

// Prefix is the root of the KBS API.
const Prefix = "/kbs/v0/"

// Server is a KBS.
type Server struct {
	cfg       *Config
	store     store.Store
	as        attestationService
	builtin   *attestation.Service // nil with a remote attestation service
	rvps      *rvps.Service        // nil with a remote attestation service
	jwks      []gojose.JSONWebKey
	resources *resources
	tokens    *ear.Verifier
	admin     *Admin
	sessions  *sessions
	limiter   *clientLimiter
	metrics   *metrics
	replicas  *replicas
	spiffe    *spiffeIssuer // nil without [spiffe]
	log       *slog.Logger
	now       func() time.Time
}

// Handler routes the KBS API, /metrics, /healthz and the token JWKS.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(Prefix, s.api)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /.well-known/jwks.json", s.serveJWKS)
	s.dashboardRoutes(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The API answers a path that is not canonical ("..", ".", "//",
		// a trailing slash) itself, with InvalidRequestPath, also when it
		// only cleans to an API path: ServeMux would redirect it.
		if strings.HasPrefix(r.URL.Path, Prefix) || strings.HasPrefix(path.Clean(r.URL.Path)+"/", Prefix) {
			s.api(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Close releases the store.
func (s *Server) Close() error { return s.store.Close() }

// SweepSessions deletes expired sessions until ctx ends.
func (s *Server) SweepSessions(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := s.sessions.sweep(ctx); err != nil {
				s.log.Warn("session sweep failed", "err", err)
			} else if n > 0 {
				s.log.Debug("expired sessions deleted", "count", n)
			}
		}
	}
}

// statusWriter remembers the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// api dispatches /kbs/v0/<endpoint>/<rest...>.
func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	p, perr := CanonicalPath(r.URL)
	endpoint, rest, _ := strings.Cut(strings.TrimPrefix(p, Prefix), "/")
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic serving request", "path", r.URL.Path, "panic", v)
			s.fail(sw, r, endpoint, protocol.Errorf(protocol.KindInternal, "internal error"))
		}
		label := endpointLabel(endpoint)
		s.metrics.requests.WithLabelValues(label, r.Method, strconv.Itoa(sw.code)).Inc()
		s.metrics.latency.WithLabelValues(label).Observe(time.Since(start).Seconds())
	}()
	r.Body = http.MaxBytesReader(sw, r.Body, int64(s.cfg.HTTPServer.PayloadRequestSize)<<20)
	err := perr
	if err == nil && !strings.HasPrefix(p, Prefix) {
		err = fmt.Errorf("%w: %q is not below %s", ErrPathNotCanonical, p, Prefix)
	}
	if err != nil {
		err = &protocol.Error{Kind: protocol.KindInvalidPath, Detail: err.Error(), Err: err}
	} else {
		err = s.route(sw, r, endpoint, rest)
	}
	if err != nil {
		s.fail(sw, r, endpoint, err)
	}
}

func endpointLabel(e string) string {
	switch e {
	case "auth", "attest", "resource", "attestation-policy", "resource-policy", "reference-value", "spiffe", "spiffe-policy":
		return e
	}
	return "other"
}

func (s *Server) route(w http.ResponseWriter, r *http.Request, endpoint, rest string) error {
	m := r.Method
	// Only resources and reference values are named by the rest of the
	// path; anywhere else it would dodge path-based admin ACLs.
	switch endpoint {
	case "auth", "attest", "attestation-policy", "resource-policy", "reference-value", "spiffe-policy":
		if rest != "" && !(endpoint == "reference-value" && m == http.MethodGet) &&
			!(endpoint == "resource-policy" && protocol.ValidSegment(rest)) {
			return protocol.Errorf(protocol.KindInvalidPath, "unexpected path after %s", endpoint)
		}
	}
	switch {
	case endpoint == "auth" && m == http.MethodPost:
		if err := s.admit(w, r); err != nil {
			return err
		}
		return s.auth(w, r)
	case endpoint == "attest" && m == http.MethodPost:
		if err := s.admit(w, r); err != nil {
			return err
		}
		return s.attest(w, r)
	case endpoint == "attestation-policy" && m == http.MethodPost:
		return s.adminCall(w, r, s.setAttestationPolicy)
	case endpoint == "resource-policy" && m == http.MethodPost:
		return s.adminCall(w, r, func(w http.ResponseWriter, r *http.Request, id *AdminIdentity) error {
			return s.setResourcePolicy(w, r, id, rest)
		})
	case endpoint == "resource-policy" && m == http.MethodGet:
		return s.adminCall(w, r, func(w http.ResponseWriter, r *http.Request, id *AdminIdentity) error {
			return s.getResourcePolicy(w, r, rest)
		})
	case endpoint == "reference-value" && m == http.MethodPost:
		return s.adminCall(w, r, s.registerReferenceValue)
	case endpoint == "reference-value" && m == http.MethodGet:
		return s.adminCall(w, r, func(w http.ResponseWriter, r *http.Request, id *AdminIdentity) error {
			return s.getReferenceValue(w, r, rest)
		})
	case endpoint == "resource":
		return s.resource(w, r, rest)
	case endpoint == "spiffe":
		return s.spiffeCall(w, r, rest)
	case endpoint == "spiffe-policy" && m == http.MethodPost:
		return s.adminCall(w, r, s.setSPIFFEPolicy)
	case endpoint == "spiffe-policy" && m == http.MethodGet:
		return s.adminCall(w, r, s.getSPIFFEPolicy)
	}
	return wrongMethod(m, endpoint)
}

// wrongMethod refuses a request no endpoint takes. Trustee routes GET,
// POST, PUT and DELETE of any path to its built-in endpoints first and to
// a plugin of that name then, so a built-in endpoint called with another
// of those methods is a plugin not found; its framework answers any other
// method with 405.
func wrongMethod(m, endpoint string) error {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete:
	default:
		return protocol.Errorf(protocol.KindMethodNotAllowed, "%s not allowed (GET, POST, PUT, DELETE)", m)
	}
	switch endpoint {
	case "auth", "attest", "attestation-policy":
		return protocol.Errorf(protocol.KindPluginNotFound, "plugin %q not found (%s takes POST)", endpoint, endpoint)
	case "resource-policy", "reference-value":
		return protocol.Errorf(protocol.KindPluginNotFound, "plugin %q not found (%s takes GET and POST)", endpoint, endpoint)
	}
	return protocol.Errorf(protocol.KindPluginNotFound, "plugin %q not found", endpoint)
}

// faultKind is the variant Trustee answers with when an endpoint fails
// itself (its store, ...): the 401 that makes guests attest again.
func faultKind(endpoint string) protocol.Kind {
	switch endpoint {
	case "auth", "attest", "attestation-policy":
		return protocol.KindAttestation
	case "resource-policy":
		return protocol.KindPolicyEngine
	case "reference-value":
		return protocol.KindRvps
	case "resource":
		return protocol.KindPluginInternal
	}
	return protocol.KindInternal
}

// fail writes a KBS error body. An error that is not a *protocol.Error is
// the KBS's own failure: logged, and answered with the endpoint's variant
// and no detail.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, endpoint string, err error) {
	var kerr *protocol.Error
	if !errors.As(err, &kerr) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			kerr = protocol.Errorf(protocol.KindPayloadTooLarge, "request body over %d bytes", tooBig.Limit)
		} else {
			kerr = protocol.Errorf(faultKind(endpoint), "internal error")
			s.log.Error("request failed", "method", r.Method, "target", r.RequestURI, "kind", kerr.Kind, "err", err)
		}
	} else if kerr.Kind == protocol.KindInternal {
		s.log.Error("request failed", "method", r.Method, "target", r.RequestURI, "kind", kerr.Kind, "err", err)
	} else {
		s.log.Info("request refused", "method", r.Method, "target", r.RequestURI, "kind", kerr.Kind, "detail", kerr.Detail)
	}
	writeJSON(w, kerr.Status(), kerr.Info())
}

// writeJSON answers with v in JSON, as encoding/json's Encoder writes it
// but encoded by encoding/json/v2's faster implementation.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if jsonv2.MarshalWrite(w, v, jsonv1.DefaultOptionsV1()) == nil {
		io.WriteString(w, "\n")
	}
}

// readBody reads the (size-limited) body; k is the variant of a failed read.
func readBody(r *http.Request, k protocol.Kind) ([]byte, error) {
	var buf bytes.Buffer
	if n := r.ContentLength; n > 0 && n <= 1<<20 {
		buf.Grow(int(n) + bytes.MinRead) // one read to the end, no regrowth
	}
	_, err := buf.ReadFrom(r.Body)
	b := buf.Bytes()
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, protocol.Errorf(protocol.KindPayloadTooLarge, "request body over %d bytes", tooBig.Limit)
	}
	if err != nil {
		return nil, protocol.Errorf(k, "read body: %v", err)
	}
	return b, nil
}

// decodeJSON reads the body into v; anything but exactly one JSON value
// is an error of variant k, the one Trustee's endpoint answers with.
func decodeJSON(r *http.Request, k protocol.Kind, v any) error {
	b, err := readBody(r, k)
	if err != nil {
		return err
	}
	// Unmarshal refuses anything but whitespace after the value. It is
	// encoding/json/v2's (github.com/go-json-experiment/json): about three
	// times as fast as encoding/json on the RCAR bodies, and as strict as
	// Trustee's serde (names match exactly; a duplicate name or invalid
	// UTF-8 is an error).
	if err := jsonv2.Unmarshal(b, v); err != nil {
		return protocol.Errorf(k, "malformed JSON: %v", err)
	}
	return nil
}

func (s *Server) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"keys": s.jwks})
}

// adminCall authorizes an admin request, then runs fn.
func (s *Server) adminCall(w http.ResponseWriter, r *http.Request, fn func(http.ResponseWriter, *http.Request, *AdminIdentity) error) error {
	id, err := s.admin.Check(r)
	if err != nil {
		// The request target as sent, query included: what was refused.
		p, _ := CanonicalPath(r.URL)
		s.log.Warn("audit: admin call refused", "method", r.Method, "target", r.RequestURI, "tenant", RepositoryOf(p),
			"remote", r.RemoteAddr, "reason", err.Error())
		kind := protocol.KindAdminAuth
		if errors.Is(err, ErrPathNotCanonical) {
			kind = protocol.KindInvalidPath
		}
		return &protocol.Error{Kind: kind, Detail: err.Error(), Err: err}
	}
	return fn(w, r, id)
}

func (s *Server) audit(r *http.Request, id *AdminIdentity, action string, attrs ...any) {
	s.log.Info("audit", append([]any{"action", action, "role", id.Role, "subject", id.Subject,
		"issuer", id.Issuer, "tenant", id.Tenant, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr}, attrs...)...)
}

// decodePolicy reads the base64url (no padding, as Trustee's clients send;
// padded is accepted too) Rego text of a policy request; k is the variant
// of a refusal.
func decodePolicy(b64 *string, k protocol.Kind) (string, error) {
	if b64 == nil {
		return "", protocol.Errorf(k, "no policy in the request")
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(*b64, "="))
	if err != nil {
		return "", protocol.Errorf(k, "policy is not base64url: %v", err)
	}
	return string(b), nil
}

// policyError gives a policy the engine refuses variant k; any other
// failure is the KBS's own.
func policyError(err error, k protocol.Kind) error {
	if errors.Is(err, policy.ErrInvalid) {
		return protocol.Errorf(k, "%v", err)
	}
	return err
}

func (s *Server) setAttestationPolicy(w http.ResponseWriter, r *http.Request, id *AdminIdentity) error {
	// Trustee's attestation service refuses every mistake of this call as
	// AttestationError.
	const k = protocol.KindAttestation
	var req struct {
		Type     string  `json:"type"`
		PolicyID string  `json:"policy_id"`
		Policy   *string `json:"policy"`
	}
	if err := decodeJSON(r, k, &req); err != nil {
		return err
	}
	if req.Type != "" && req.Type != "rego" {
		return protocol.Errorf(k, "set attestation policy: type %q is not supported (rego)", req.Type)
	}
	if req.PolicyID == "" {
		req.PolicyID = attestation.DefaultPolicyID + "_cpu"
	}
	if !validPolicyID(req.PolicyID) {
		return protocol.Errorf(k, "set attestation policy: bad policy_id %q", req.PolicyID)
	}
	text, err := decodePolicy(req.Policy, k)
	if err != nil {
		return err
	}
	if s.builtin == nil {
		return remoteASManages(k)
	}
	if err := s.builtin.Policies().Set(r.Context(), req.PolicyID, text); err != nil {
		return policyError(err, k)
	}
	s.audit(r, id, "set-attestation-policy", "policy_id", req.PolicyID, "bytes", len(text))
	w.WriteHeader(http.StatusOK)
	return nil
}

func validPolicyID(id string) bool {
	return len(id) <= 128 && protocol.ValidSegment(id)
}

func (s *Server) registerReferenceValue(w http.ResponseWriter, r *http.Request, id *AdminIdentity) error {
	if s.rvps == nil {
		return remoteASManages(protocol.KindRvps)
	}
	b, err := readBody(r, protocol.KindRvps)
	if err != nil {
		return err
	}
	names, err := s.rvps.Register(r.Context(), b)
	if errors.Is(err, rvps.ErrMalformedMessage) || errors.Is(err, rvps.ErrUnsupportedType) || errors.Is(err, rvps.ErrUnsupportedVersion) {
		return protocol.Errorf(protocol.KindRvps, "%v", err)
	}
	if err != nil {
		return err
	}
	s.audit(r, id, "register-reference-value", "names", names)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) getReferenceValue(w http.ResponseWriter, r *http.Request, name string) error {
	if s.rvps == nil {
		return remoteASManages(protocol.KindRvps)
	}
	var v json.RawMessage
	if name != "" {
		var err error
		if v, err = s.rvps.Query(r.Context(), name); err != nil {
			return err
		}
	}
	if v == nil {
		return protocol.Errorf(protocol.KindRvps, "no reference value named %q", name)
	}
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(v)
	return err
}
