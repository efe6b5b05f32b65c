package protocol

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrorTypePrefix starts the "type" member of every KBS error body.
const ErrorTypePrefix = "https://github.com/confidential-containers/kbs/errors/"

// Kind is a KBS error variant, named as Trustee names it on the wire.
type Kind string

// The error variants a KBS answers with.
const (
	KindAttestation      Kind = "AttestationError"
	KindRcarAuth         Kind = "RcarAuthFailed"
	KindRcarAttest       Kind = "RcarAttestFailed"
	KindTokenNotFound    Kind = "TokenNotFound"
	KindTokenVerifier    Kind = "TokenVerifierError"
	KindPolicyDeny       Kind = "PolicyDeny"
	KindPolicyEngine     Kind = "PolicyEngineError"
	KindJwe              Kind = "JweError"
	KindInvalidPath      Kind = "InvalidRequestPath"
	KindPluginNotFound   Kind = "PluginNotFound"
	KindPluginInternal   Kind = "PluginInternalError"
	KindResourceNotFound Kind = "ResourceNotFound"
	KindAdminAuth        Kind = "AdminAuthAccess"
	KindSerde            Kind = "SerdeError"
	KindSetPolicy        Kind = "SetPolicy"
	KindRvps             Kind = "RvpsError"
	KindPayloadTooLarge  Kind = "PayloadTooLarge"
	KindMethodNotAllowed Kind = "MethodNotAllowed"
	// KindTooManyRequests is Cocoon's: a client over its rate limit, or
	// the KBS at its cap of sessions (429, with Retry-After).
	KindTooManyRequests Kind = "TooManyRequests"
	KindInternal        Kind = "InternalError"
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
// an unknown path or plugin, 401 for the rest of the client's mistakes
// (Trustee's clients depend on it), and 5xx only for our own failures.
func (e *Error) Status() int {
	switch e.Kind {
	case KindInvalidPath, KindPluginNotFound, KindResourceNotFound:
		return http.StatusNotFound
	case KindPayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case KindMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case KindTooManyRequests:
		return http.StatusTooManyRequests
	case KindInternal, KindPluginInternal:
		return http.StatusInternalServerError
	}
	return http.StatusUnauthorized
}

// ParseErrorInformation turns a KBS error body into an Error; ok is false
// when body is not one.
func ParseErrorInformation(info ErrorInformation) (*Error, bool) {
	if len(info.Type) <= len(ErrorTypePrefix) || info.Type[:len(ErrorTypePrefix)] != ErrorTypePrefix {
		return nil, false
	}
	return &Error{Kind: Kind(info.Type[len(ErrorTypePrefix):]), Detail: info.Detail}, true
}
