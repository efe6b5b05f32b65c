package cca

import (
	"encoding/base64"
	"encoding/hex"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// claimsOf names the token's claims as Trustee's CCA verifier does
// (binary values in standard base64, as Veraison's EAR carries them):
// "platform" and "realm" objects, with "report_data" (the realm
// challenge) and "init_data" (the personalization value) in hex. Trustee
// passes a subset of the platform and realm claims on; every claim is here,
// under the names of Trustee's claims sample (test_data/cca-claims.json).
func claimsOf(t *Token) verifier.Claims {
	return verifier.Claims{
		"platform":    platformClaims(&t.Platform),
		"realm":       realmClaims(&t.Realm),
		"report_data": hex.EncodeToString(t.Realm.Challenge),
		"init_data":   hex.EncodeToString(t.Realm.PersonalizationValue),
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func platformClaims(p *PlatformClaims) map[string]any {
	sw := make([]any, len(p.SwComponents))
	for i, c := range p.SwComponents {
		m := map[string]any{"measurement-value": b64(c.Value), "signer-id": b64(c.SignerID)}
		setIf(m, "measurement-type", c.Type)
		setIf(m, "version", c.Version)
		setIf(m, "hash-algo-id", c.HashAlgorithm)
		sw[i] = m
	}
	m := map[string]any{
		"cca-platform-profile":           p.Profile,
		"cca-platform-challenge":         b64(p.Challenge),
		"cca-platform-implementation-id": b64(p.ImplementationID),
		"cca-platform-instance-id":       b64(p.InstanceID),
		"cca-platform-config":            b64(p.Config),
		"cca-platform-lifecycle":         int(*p.Lifecycle),
		"cca-platform-sw-components":     sw,
		"cca-platform-hash-algo-id":      p.HashAlgorithm,
	}
	setIf(m, "cca-platform-service-indicator", p.ServiceIndicator)
	return m
}

func realmClaims(r *RealmClaims) map[string]any {
	rem := make([]any, len(r.ExtensibleMeasurements))
	for i, v := range r.ExtensibleMeasurements {
		rem[i] = b64(v)
	}
	m := map[string]any{
		"cca-realm-challenge":               b64(r.Challenge),
		"cca-realm-personalization-value":   b64(r.PersonalizationValue),
		"cca-realm-initial-measurement":     b64(r.InitialMeasurement),
		"cca-realm-extensible-measurements": rem,
		"cca-realm-hash-algo-id":            r.HashAlgorithm,
		"cca-realm-public-key":              b64(r.PublicKey),
		"cca-realm-public-key-hash-algo-id": r.PublicKeyHashAlgorithm,
	}
	setIf(m, "cca-realm-profile", r.Profile)
	return m
}

func setIf(m map[string]any, k string, v *string) {
	if v != nil {
		m[k] = *v
	}
}
