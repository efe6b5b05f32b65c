// Package keyprovider is the owner side of image encryption: the ocicrypt
// key provider "attestation-agent" that skopeo calls to wrap each layer's
// private options. The wrapping key (KEK) is registered in the KBS, which
// releases it only to attested guests; the annotation names it by its KBS
// resource URI (kid), as guest-components' coco_keyprovider does.
package keyprovider

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/cocoon-cc/cocoon/guest/cdh/wrap"
	"github.com/cocoon-cc/cocoon/protocol"
)

// Provider is the key provider name in ocicrypt parameters and in the
// layer annotation org.opencontainers.image.enc.keys.provider.<Provider>.
const Provider = "attestation-agent"

// defaultRepoPath is where a KEK without a keyid goes, as upstream.
const defaultRepoPath = "/default/image-kek/"

var (
	// ErrInput: the protocol input or its parameters are malformed.
	ErrInput = errors.New("bad key provider input")
	// ErrRegister: the KBS refused to store the KEK.
	ErrRegister = errors.New("registering the key-encryption key in the KBS failed")
)

// Registrar stores a KEK in the KBS at repo/type/tag (kbs/client.Admin).
type Registrar interface {
	SetResource(ctx context.Context, path string, data []byte) error
}

// input is ocicrypt's KeyProviderKeyWrapProtocolInput, wrap side.
type input struct {
	Op            string `json:"op"`
	KeyWrapParams struct {
		Ec *struct {
			Parameters map[string][][]byte `json:"Parameters"`
		} `json:"ec"`
		OptsData []byte `json:"optsdata"`
	} `json:"keywrapparams"`
}

// output is KeyProviderKeyWrapProtocolOutput; the annotation is a JSON
// array of bytes as upstream's Vec<u8>, which Go's ocicrypt reads too.
type output struct {
	KeyWrapResults struct {
		Annotation []int `json:"annotation"`
	} `json:"keywrapresults"`
}

// params are the "k=v::k=v" options of --encryption-key
// provider:attestation-agent:<params>.
type params struct {
	keyid, keypath string
	wrapType       wrap.Type
}

func parseParams(s string) (*params, error) {
	p := &params{wrapType: wrap.A256GCM}
	for _, kv := range strings.Split(s, "::") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch k {
		case "keyid":
			p.keyid = v
		case "keypath":
			p.keypath = v
		case "algorithm":
			t, err := wrap.ParseType(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInput, err)
			}
			p.wrapType = t
		case "sample":
			if v == "true" {
				return nil, fmt.Errorf("%w: the sample key provider's hard-coded key is not offered", ErrInput)
			}
		}
	}
	return p, nil
}

// kbsPath turns a kid (kbs:///repo/type/tag, kbs://host/repo/type/tag or
// /repo/type/tag) into the KBS resource path repo/type/tag.
func kbsPath(kid string) (string, error) {
	rest := kid
	if r, ok := strings.CutPrefix(kid, "kbs://"); ok {
		_, rest, _ = strings.Cut(r, "/")
	}
	rest = strings.TrimPrefix(rest, "/")
	if _, err := protocol.ParseResourcePath(rest); err != nil {
		return "", fmt.Errorf("%w: keyid %q is not kbs:///<repository>/<type>/<tag>", ErrInput, kid)
	}
	return rest, nil
}

// Wrapper wraps layer keys. skopeo calls WrapKey once per layer with the
// same keyid: a generated KEK is remembered per keyid so that every layer
// of an image is wrapped with the one KEK the KBS holds (upstream generates
// one per call, each overwriting the last in the KBS).
type Wrapper struct {
	reg  Registrar
	mu   sync.Mutex
	keks map[string][]byte // keyid -> generated KEK, registered
}

// NewWrapper returns a Wrapper registering KEKs with reg (nil: nowhere).
func NewWrapper(reg Registrar) *Wrapper {
	return &Wrapper{reg: reg, keks: map[string][]byte{}}
}

// WrapKey answers a keywrap request: it wraps the layer options with the
// KEK (read from keypath, else generated once per keyid), registers the KEK
// under the keyid, and returns the protocol output JSON.
func (w *Wrapper) WrapKey(ctx context.Context, in []byte) ([]byte, error) {
	var req input
	if err := json.Unmarshal(in, &req); err != nil {
		return nil, fmt.Errorf("%w: not KeyProviderKeyWrapProtocolInput JSON: %w", ErrInput, err)
	}
	if req.Op != "keywrap" || req.KeyWrapParams.Ec == nil || len(req.KeyWrapParams.OptsData) == 0 {
		return nil, fmt.Errorf("%w: op %q without keywrapparams", ErrInput, req.Op)
	}
	ps := req.KeyWrapParams.Ec.Parameters[Provider]
	if len(ps) == 0 {
		return nil, fmt.Errorf("%w: no %s parameters", ErrInput, Provider)
	}
	p, err := parseParams(string(ps[0]))
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	kek, kid, err := w.kek(ctx, p)
	if err != nil {
		return nil, err
	}
	iv, ct, err := wrap.Encrypt(p.wrapType, kek, req.KeyWrapParams.OptsData)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInput, err)
	}
	packet, err := json.Marshal(protocol.KeyPacket{Kid: kid, WrappedData: base64.StdEncoding.EncodeToString(ct),
		IV: base64.StdEncoding.EncodeToString(iv), WrapType: string(p.wrapType)})
	if err != nil {
		return nil, err
	}
	var out output
	out.KeyWrapResults.Annotation = make([]int, len(packet))
	for i, b := range packet {
		out.KeyWrapResults.Annotation[i] = int(b)
	}
	return json.Marshal(out)
}

// kek reads or generates the key-encryption key, names it and makes sure
// the KBS holds it.
func (w *Wrapper) kek(ctx context.Context, p *params) ([]byte, string, error) {
	kid := p.keyid
	if kid == "" {
		id := make([]byte, 16)
		rand.Read(id)
		kid = fmt.Sprintf("kbs://%s%x", defaultRepoPath, id)
	}
	path, err := kbsPath(kid)
	if err != nil {
		return nil, "", err
	}
	if p.keypath == "" {
		if k, ok := w.keks[kid]; ok {
			return k, kid, nil
		}
	}
	k, err := p.readKEK()
	if err != nil {
		return nil, "", err
	}
	if w.reg != nil {
		if err := w.reg.SetResource(ctx, path, k); err != nil {
			return nil, "", fmt.Errorf("%w: %s: %w", ErrRegister, kid, err)
		}
	}
	if p.keypath == "" {
		w.keks[kid] = k
	}
	return k, kid, nil
}

// readKEK reads keypath, or generates a key without one.
func (p *params) readKEK() ([]byte, error) {
	if p.keypath == "" {
		k := make([]byte, wrap.KeySize)
		rand.Read(k)
		return k, nil
	}
	k, err := os.ReadFile(p.keypath)
	if err != nil {
		return nil, fmt.Errorf("%w: keypath: %w", ErrInput, err)
	}
	if len(k) != wrap.KeySize {
		return nil, fmt.Errorf("%w: keypath holds %d bytes, want %d", ErrInput, len(k), wrap.KeySize)
	}
	return k, nil
}
