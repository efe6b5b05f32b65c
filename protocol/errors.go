package protocol

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ErrorTypePrefix starts the "type" member of every KBS error body.
const ErrorTypePrefix = "https://github.com/confidential-containers/kbs/errors/"

// Kind is a KBS error variant, named as Trustee names it on the wire.
type Kind string

// The error variants a KBS answers with: Trustee's (kbs/src/error.rs), and
// Cocoon's few for what Trustee leaves to its HTTP framework or lacks.
const (
	KindAttestation     Kind = "AttestationError" // auth, attest, attestation-policy
	KindTokenNotFound   Kind = "TokenNotFound"
	KindTokenVerifier   Kind = "TokenVerifierError"
	KindPolicyDeny      Kind = "PolicyDeny"
	KindPolicyEngine    Kind = "PolicyEngineError"
	KindParsePolicy     Kind = "ParsePolicyError" // an unreadable resource-policy request
	KindJwe             Kind = "JweError"
	KindInvalidPath     Kind = "InvalidRequestPath"
	KindPluginNotFound  Kind = "PluginNotFound" // also a known endpoint with another of GET, POST, PUT, DELETE
	KindPluginInternal  Kind = "PluginInternalError"
	KindAdminAuth       Kind = "AdminAuthAccess"
	KindSerde           Kind = "SerdeError"
	KindRvps            Kind = "RvpsError"
	KindPayloadTooLarge Kind = "PayloadTooLarge" // Trustee's framework answers 413 too
	// KindMethodNotAllowed: a method other than GET, POST, PUT and DELETE
	// (405, as Trustee's framework answers).
	KindMethodNotAllowed Kind = "MethodNotAllowed"
	// KindTooManyRequests is Cocoon's: a client over its rate limit, or
	// the KBS at its cap of sessions (429, with Retry-After).
	KindTooManyRequests Kind = "TooManyRequests"
	// KindInternal is Cocoon's: a request that crashed its handler (500).
	KindInternal Kind = "InternalError"
)

// ErrorInformation is the JSON body of every KBS error response.
type ErrorInformation struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// Error is a typed KBS error. Detail is safe to send to the client; Err
// (if any) is kept for logs and errors.Is.
type Error struct {
	Kind   Kind
	Detail string
	Err    error
}

// Errorf builds an Error of kind k.
func Errorf(k Kind, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: k, Detail: err.Error(), Err: errors.Unwrap(err)}
}

func (e *Error) Error() string { return string(e.Kind) + ": " + e.Detail }

// Unwrap exposes the cause.
func (e *Error) Unwrap() error { return e.Err }

// Info renders the wire body.
func (e *Error) Info() ErrorInformation {
	return ErrorInformation{Type: ErrorTypePrefix + string(e.Kind), Detail: e.Detail}
}

// Status is the HTTP status Trustee answers with for the variant: 404 for
// an unknown path or plugin and 401 for everything else, its own failures
// included (guest-components' client attests again after a 401); 413, 405,
// 429 and 500 for Cocoon's variants.
func (e *Error) Status() int {
	switch e.Kind {
	case KindInvalidPath, KindPluginNotFound:
		return http.StatusNotFound
	case KindPayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case KindMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case KindTooManyRequests:
		return http.StatusTooManyRequests
	case KindInternal:
		return http.StatusInternalServerError
	}
	return http.StatusUnauthorized
}

// ResourceNotFound is a KBS's answer for a resource it does not hold:
// Trustee's resource plugin fails, so its type is PluginInternalError
// (401) and only the detail says what is missing.
func ResourceNotFound(path string) *Error {
	return &Error{Kind: KindPluginInternal, Detail: "resource " + path + " not found"}
}

// IsResourceNotFound says whether err is Cocoon's ResourceNotFound answer
// (Trustee's detail does not say).
func IsResourceNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == KindPluginInternal &&
		strings.HasPrefix(e.Detail, "resource ") && strings.HasSuffix(e.Detail, " not found")
}

// ParseErrorInformation turns a KBS error body into an Error; ok is false
// when body is not one.
func ParseErrorInformation(info ErrorInformation) (*Error, bool) {
	if len(info.Type) <= len(ErrorTypePrefix) || info.Type[:len(ErrorTypePrefix)] != ErrorTypePrefix {
		return nil, false
	}
	return &Error{Kind: Kind(info.Type[len(ErrorTypePrefix):]), Detail: info.Detail}, true
}
