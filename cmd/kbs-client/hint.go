package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

// withHint adds to err what the user most likely has to change, for the
// mistakes of a first setup: a self-signed KBS without --cert-file, the
// wrong scheme in --url, a public key where the private one belongs,
// evidence appraised against no reference values.
func withHint(err error, g *globals) error {
	if h := hint(err, g); h != "" {
		return fmt.Errorf("%w\nhint: %s", err, h)
	}
	return err
}

func hint(err error, g *globals) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var kerr *protocol.Error
	msg := err.Error()
	switch {
	case errors.As(err, &unknown) && g.certFile == "":
		return "the KBS's TLS certificate is not signed by a CA this system trusts (self-signed?): pass --cert-file with it (PEM)"
	case errors.As(err, &unknown):
		return fmt.Sprintf("the KBS's TLS certificate is not signed by --cert-file %s: pass the KBS's certificate or its CA", g.certFile)
	case errors.As(err, &host):
		return "the KBS's TLS certificate is not for the host in --url: use a name or address the certificate names"
	case strings.HasPrefix(g.url, "http://") && (strings.Contains(msg, "HTTP request to an HTTPS server") ||
		strings.Contains(msg, `malformed HTTP response "\x15\x03`)):
		return "the KBS speaks HTTPS: use --url https://" + strings.TrimPrefix(g.url, "http://")
	case strings.HasPrefix(g.url, "https://") && strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return "the KBS speaks plain HTTP (insecure_http): use --url http://" + strings.TrimPrefix(g.url, "https://")
	case errors.As(err, &kerr) && kerr.Kind == protocol.KindPolicyDeny && strings.Contains(kerr.Detail, "appraisal is"):
		return "the attestation service did not affirm the evidence: register the reference values it is checked against " +
			"(for the sample TEE: README's first secret; for a guest image: cocoon-measure --message, then set-reference-value)"
	case errors.Is(err, client.ErrPublicKey):
		return "--auth-private-key takes the private key (e.g. admin.key); its public key (admin.pub) is the KBS's"
	}
	return ""
}
