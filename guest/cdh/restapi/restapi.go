// Package restapi is api-server-rest's HTTP front for workloads:
// GET /cdh/resource/<repo>/<type>/<tag>[?<plugin parameters>] through the CDH, and /aa/token and
// /aa/evidence through the attestation agent, both over ttrpc.
package restapi

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
	aapb "github.com/cocoon-cc/cocoon/protocol/ttrpc/aa"
	cdhpb "github.com/cocoon-cc/cocoon/protocol/ttrpc/cdh"
)

// CDH is the part of the CDH's API the server uses.
type CDH interface {
	GetResource(ctx context.Context, r *cdhpb.GetResourceRequest) (*cdhpb.GetResourceResponse, error)
}

// AA is the part of the attestation agent's API the server uses.
type AA interface {
	GetToken(ctx context.Context, r *aapb.GetTokenRequest) (*aapb.GetTokenResponse, error)
	GetEvidence(ctx context.Context, r *aapb.GetEvidenceRequest) (*aapb.GetEvidenceResponse, error)
}

// callTimeout bounds one ttrpc call, as upstream's 50 s.
const callTimeout = 50 * time.Second

// Handler serves the routes of the enabled features; a nil client
// disables its routes.
func Handler(cdh CDH, aa AA) http.Handler {
	mux := http.NewServeMux()
	if cdh != nil {
		mux.HandleFunc("GET /cdh/resource/{repo}/{type}/{tag}", func(w http.ResponseWriter, r *http.Request) {
			uri, err := resourceURI(r)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			resp, err := cdh.GetResource(ctxOf(r), &cdhpb.GetResourceRequest{ResourcePath: uri.String()})
			reply(w, func() []byte { return resp.GetResource() }, err)
		})
	}
	if aa != nil {
		mux.HandleFunc("GET /aa/token", func(w http.ResponseWriter, r *http.Request) {
			resp, err := aa.GetToken(ctxOf(r), &aapb.GetTokenRequest{TokenType: r.URL.Query().Get("token_type")})
			reply(w, func() []byte { return resp.GetToken() }, err)
		})
		mux.HandleFunc("GET /aa/evidence", func(w http.ResponseWriter, r *http.Request) {
			rd, ok := runtimeData(r)
			if !ok {
				http.Error(w, "runtime_data is required; encoding may only be base64 (URL-safe, no padding)", http.StatusBadRequest)
				return
			}
			resp, err := aa.GetEvidence(ctxOf(r), &aapb.GetEvidenceRequest{RuntimeData: rd})
			reply(w, func() []byte { return resp.GetEvidence() }, err)
		})
	}
	return mux
}

func ctxOf(r *http.Request) context.Context {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	context.AfterFunc(r.Context(), cancel)
	return ctx
}

// resourceURI is the resource a request names: each path segment (as the
// router decoded it, so an escaped '?' or '/' stays inside its segment and
// is refused) checked against the KBS's rule, and the request's own query
// string, re-encoded, as the resource plugin parameters. Only a caller
// that writes a query sends one to the KBS.
func resourceURI(r *http.Request) (resource.URI, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return resource.URI{}, fmt.Errorf("%w: query: %v", resource.ErrInvalidURI, err)
	}
	return resource.New(r.PathValue("repo"), r.PathValue("type"), r.PathValue("tag"), q)
}

// runtimeData decodes runtime_data as upstream: raw text, or base64url
// without padding when encoding=base64.
func runtimeData(r *http.Request) ([]byte, bool) {
	q := r.URL.Query()
	rd := q.Get("runtime_data")
	if rd == "" {
		return nil, false
	}
	switch q.Get("encoding") {
	case "":
		return []byte(rd), true
	case "base64":
		b, err := base64.RawURLEncoding.DecodeString(rd)
		return b, err == nil
	}
	return nil, false
}

// reply writes body() or the error's status.
func reply(w http.ResponseWriter, body func() []byte, err error) {
	if err != nil {
		st := status.Convert(err)
		http.Error(w, st.Message(), httpStatus(st.Code()))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(body())
}

func httpStatus(c codes.Code) int {
	switch c {
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unavailable, codes.DeadlineExceeded:
		return http.StatusServiceUnavailable
	case codes.Unimplemented:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}
