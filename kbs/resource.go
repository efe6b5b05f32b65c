package kbs

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cocoon-cc/cocoon/attestation/ear"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/policy"
	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/store"
)

// Store namespaces and ids of the resource plugin.
const (
	ResourceNamespace       = "resources"
	ResourcePolicyNamespace = "resource-policy"
	ResourcePolicyID        = "resource-policy"
	// RepositoryPolicyPrefix + a repository is the id of that
	// repository's own resource policy.
	RepositoryPolicyPrefix = "repository/"
)

// MaxResourceSize bounds a stored resource.
const MaxResourceSize = 1 << 20

type resources struct {
	store  store.Store
	policy *policy.Engine
}

func (s *Server) resource(w http.ResponseWriter, r *http.Request, rest string) error {
	path, err := protocol.ParseResourcePath(rest)
	if err != nil {
		// Trustee's resource plugin refuses a path it cannot read.
		return &protocol.Error{Kind: protocol.KindPluginInternal, Detail: err.(*protocol.Error).Detail, Err: err}
	}
	switch r.Method {
	case http.MethodGet:
		err := s.releaseResource(w, r, path)
		s.metrics.resourceRequest(s.now(), path.String(), err)
		return err
	case http.MethodPost, http.MethodPut:
		return s.adminCall(w, r, func(w http.ResponseWriter, r *http.Request, id *AdminIdentity) error {
			return s.setResource(w, r, id, path)
		})
	case http.MethodDelete:
		return s.adminCall(w, r, func(w http.ResponseWriter, r *http.Request, id *AdminIdentity) error {
			if err := s.resources.store.Delete(r.Context(), ResourceNamespace, path.String()); err != nil {
				return err
			}
			s.audit(r, id, "delete-resource", "resource", path.String())
			return nil
		})
	}
	return wrongMethod(r.Method, "resource")
}

func (s *Server) setResource(w http.ResponseWriter, r *http.Request, id *AdminIdentity, path protocol.ResourcePath) error {
	b, err := readBody(r, protocol.KindPluginInternal)
	if err != nil {
		return err
	}
	if len(b) > MaxResourceSize {
		return protocol.Errorf(protocol.KindPayloadTooLarge, "resource over %d bytes", MaxResourceSize)
	}
	if err := s.resources.store.Put(r.Context(), ResourceNamespace, path.String(), b); err != nil {
		return err
	}
	s.audit(r, id, "set-resource", "resource", path.String(), "bytes", len(b))
	return nil
}

// releaseResource checks the caller's token, asks the resource policy and
// answers with the resource sealed to the token's TEE key.
func (s *Server) releaseResource(w http.ResponseWriter, r *http.Request, path protocol.ResourcePath) error {
	claims, raw, err := s.verifiedToken(r)
	if err != nil {
		return err
	}
	if err := s.decide(r.Context(), claims, raw, path, r.URL.Query()); err != nil {
		return err
	}
	pub, err := teePubKeyOf(claims)
	if err != nil {
		return err
	}
	data, err := s.resources.store.Get(r.Context(), ResourceNamespace, path.String())
	if errors.Is(err, store.ErrNotFound) {
		return protocol.ResourceNotFound(path.String())
	}
	if err != nil {
		return err
	}
	resp, err := jose.Encrypt(pub, data, s.cfg.JWE.AllowRSA1_5)
	if err != nil {
		return &protocol.Error{Kind: protocol.KindJwe, Detail: err.Error(), Err: err}
	}
	s.log.Info("audit", "action", "release-resource", "tenant", path.Repository, "resource", path.String(), "remote", r.RemoteAddr,
		"tee", teeOf(claims), "status", claims.Submods["cpu0"].Status)
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// verifiedToken is the caller's attestation token, verified: its claims,
// typed and as a policy's input.
func (s *Server) verifiedToken(r *http.Request) (*ear.Claims, map[string]any, error) {
	token, err := s.tokenOf(r)
	if err != nil {
		return nil, nil, err
	}
	claims, raw, err := s.tokens.Verify(token)
	if err != nil {
		return nil, nil, &protocol.Error{Kind: protocol.KindTokenVerifier, Detail: err.Error(), Err: err}
	}
	return claims, raw, nil
}

// tokenOf finds the attestation token: the attested session's, or a bearer
// token.
func (s *Server) tokenOf(r *http.Request) (string, error) {
	if _, sess, err := s.sessionOf(r, s.sessions.get); err == nil && sess != nil {
		return sess.Token, nil
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && tok != "" {
		return strings.TrimSpace(tok), nil
	}
	return "", protocol.Errorf(protocol.KindTokenNotFound, "no attested session and no bearer token")
}

// decide evaluates the resource policy and the repository's own, if it has
// one: input = the token's claims, data = the plugin, path and query. Both
// must answer true.
func (s *Server) decide(ctx context.Context, token *ear.Claims, claims map[string]any, path protocol.ResourcePath, query map[string][]string) error {
	q := map[string]any{}
	for k, v := range query {
		q[k] = v[0]
	}
	data := map[string]any{
		"plugin":        "resource",
		"resource-path": []any{path.Repository, path.Type, path.Tag},
		"query":         q,
	}
	ids := []string{ResourcePolicyID, RepositoryPolicyPrefix + path.Repository}
	err := s.resources.policy.EvalEach(ctx, ids, "data.policy.allow", claims, data, func(id string, out any) error {
		if allow, ok := out.(bool); !ok || !allow {
			s.metrics.decisions.WithLabelValues("deny").Inc()
			return protocol.Errorf(protocol.KindPolicyDeny, "resource policy %s denied %s%s", id, path, appraisal(token))
		}
		return nil
	})
	var kerr *protocol.Error
	if errors.As(err, &kerr) {
		return err
	}
	if err != nil {
		s.metrics.decisions.WithLabelValues("error").Inc()
		return &protocol.Error{Kind: protocol.KindPolicyEngine, Detail: err.Error(), Err: err}
	}
	s.metrics.decisions.WithLabelValues("allow").Inc()
	return nil
}

// teePubKeyOf reads the TEE key the token vouches for.
func teePubKeyOf(c *ear.Claims) (protocol.TeePubKey, error) {
	var rd struct {
		TeePubKey *protocol.TeePubKey `json:"tee-pubkey"`
	}
	cpu, ok := c.Submods["cpu0"]
	if !ok {
		return protocol.TeePubKey{}, protocol.Errorf(protocol.KindTokenVerifier, "token has no cpu0 submodule")
	}
	if cpu.RuntimeData(&rd) != nil || rd.TeePubKey == nil {
		return protocol.TeePubKey{}, protocol.Errorf(protocol.KindTokenVerifier, "token carries no tee-pubkey")
	}
	return *rd.TeePubKey, nil
}

// teeOf names the TEE a token's cpu0 appraisal is about, for audit lines.
func teeOf(c *ear.Claims) string { return c.Submods["cpu0"].TEE() }

// policyID is the id of the resource policy of repo ("": the global one).
func policyID(repo string) string {
	if repo == "" {
		return ResourcePolicyID
	}
	return RepositoryPolicyPrefix + repo
}

// appraisal says, for a refusal's detail, how the token's cpu0 appraisal
// came out when it is not affirming, and which trust claims kept it there:
// the usual reason why a policy that wants affirming refuses.
func appraisal(c *ear.Claims) string {
	cpu, ok := c.Submods["cpu0"]
	if !ok || cpu.Status == ear.StatusAffirming {
		return ""
	}
	return fmt.Sprintf(" (the token's cpu0 appraisal is %s: %s)", cpu.Status, strings.Join(cpu.TrustVector.Unaffirmed(), ", "))
}

func (s *Server) setResourcePolicy(w http.ResponseWriter, r *http.Request, id *AdminIdentity, repo string) error {
	return s.setPolicy(r, id, s.resources.policy, policyID(repo), "set-resource-policy")
}

// setPolicy reads a {"policy":"<base64url Rego>"} request into engine e
// as policy pid and audits it as action.
func (s *Server) setPolicy(r *http.Request, id *AdminIdentity, e *policy.Engine, pid, action string) error {
	var req struct {
		Policy *string `json:"policy"`
	}
	if err := decodeJSON(r, protocol.KindParsePolicy, &req); err != nil {
		return err
	}
	text, err := decodePolicy(req.Policy, protocol.KindParsePolicy)
	if err != nil {
		return err
	}
	if err := e.Set(r.Context(), pid, text); err != nil {
		return policyError(err, protocol.KindPolicyEngine)
	}
	s.audit(r, id, action, "bytes", len(text))
	return nil
}

// getResourcePolicy answers, as Trustee does, the ids of the resource
// policies (["resource-policy"], and the repositories' own), or with repo
// (Cocoon's extension) that repository's policy.
func (s *Server) getResourcePolicy(w http.ResponseWriter, r *http.Request, repo string) error {
	if repo == "" {
		ids, err := s.resources.policy.List(r.Context())
		if err != nil {
			return fmt.Errorf("resource policies: %w", err)
		}
		writeJSON(w, http.StatusOK, ids)
		return nil
	}
	text, err := s.resources.policy.Get(r.Context(), policyID(repo))
	if errors.Is(err, policy.ErrNotFound) {
		return protocol.Errorf(protocol.KindPolicyEngine, "repository %s has no resource policy", repo)
	}
	if err != nil {
		return fmt.Errorf("resource policy: %w", err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"policy": base64.RawURLEncoding.EncodeToString([]byte(text))})
	return nil
}
