package se_test

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/rand"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/se"
)

// BenchmarkVerifySE is a whole Evaluate of Trustee's SE evidence (JSON,
// base64, opening the sealed secrets, report data, measurement, image and
// host key checks, claims). Run with -cpu 1.
func BenchmarkVerifySE(b *testing.B) {
	verify := verification(b)
	b.ReportAllocs()
	for b.Loop() {
		verify()
	}
}

// verification is one Evaluate of an Ultravisor's answer.
func verification(b *testing.B) func() {
	v, uv, _ := setup(b)
	rd := reportData("n")
	_, r := evidence(b, v, uv, "s", rd)
	raw, _ := r.MarshalJSON()
	want := verifier.Expected{ReportData: rd}
	return func() {
		if _, err := v.Evaluate(ctx, raw, want); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSEMACFloor is only the cryptography of a verification: the
// HMAC-SHA512 measurement and two AES-256-GCM opens of the same sizes.
func BenchmarkSEMACFloor(b *testing.B) {
	floor := macFloor(b)
	b.ReportAllocs()
	for b.Loop() {
		floor()
	}
}

// BenchmarkSEVerifyVsFloor alternates a whole Evaluate and its floor op by
// op, so both see the same load on a shared machine, and reports the
// floor's time as a percentage of the verification's. Run with -cpu 1.
func BenchmarkSEVerifyVsFloor(b *testing.B) {
	verify, floor := verification(b), macFloor(b)
	var full, base time.Duration
	for b.Loop() {
		t0 := time.Now()
		verify()
		t1 := time.Now()
		floor()
		full, base = full+t1.Sub(t0), base+time.Since(t1)
	}
	b.ReportMetric(100*base.Seconds()/full.Seconds(), "floor-%")
}

// macFloor is the floor's work: a measurement and two opens.
func macFloor(b *testing.B) func() {
	_, uv, _ := setup(b)
	key := make([]byte, 32)
	rand.Read(key)
	blk, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(blk)
	iv := make([]byte, 12)
	k := g.Seal(nil, iv, make([]byte, 64), nil)
	n := g.Seal(nil, iv, make([]byte, 48), nil)
	mk, user, add := make([]byte, 64), make([]byte, 64), make([]byte, 64)
	return func() {
		if _, err := g.Open(nil, iv, k, nil); err != nil {
			b.Fatal(err)
		}
		if _, err := g.Open(nil, iv, n, nil); err != nil {
			b.Fatal(err)
		}
		se.Measurement(mk, &uv.Tags, uv.CUID, user, mk[:16], add)
	}
}

// BenchmarkSEChallenge is the request the KBS issues per handshake (one
// host key), against its floor: a P-521 key generation and one ECDH.
func BenchmarkSEChallenge(b *testing.B) {
	v, uv, _ := setup(b)
	b.Run("challenge", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Challenge(ctx, "s"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("floor", func(b *testing.B) {
		for b.Loop() {
			k, _ := ecdh.P521().GenerateKey(rand.Reader)
			if _, err := k.ECDH(uv.HostKey.PublicKey()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
