// Command ocienc encrypts one layer blob with ocicrypt, as skopeo copy
// --encryption-key does, for tests: ocicrypt's key provider proto registers
// the same service name as Cocoon's, so it runs in a process of its own.
//
//	ocienc IN OUT MEDIATYPE KEYPROVIDER-SPEC [JWE-PUBLIC-KEY.pem...]
//
// encrypts IN to OUT for the key provider (configured through
// OCICRYPT_KEYPROVIDER_CONFIG) and for each JWE recipient, and prints the
// layer annotations as JSON.
//
//	ocienc plain-keyprovider
//
// is an ocicrypt "cmd" key provider for benchmarks only: its annotation is
// the layer's private options themselves, not wrapped at all.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/containers/ocicrypt"
	encconfig "github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap/keyprovider"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func main() {
	var err error
	switch {
	case len(os.Args) == 2 && os.Args[1] == "plain-keyprovider":
		err = plainKeyProvider(os.Stdin, os.Stdout)
	case len(os.Args) >= 5:
		err = run(os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5:])
	default:
		fmt.Fprintln(os.Stderr, "usage: ocienc IN OUT MEDIATYPE KEYPROVIDER-SPEC [JWE-PUBLIC-KEY.pem...] | ocienc plain-keyprovider")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ocienc:", err)
		os.Exit(1)
	}
}

func run(in, out, mediaType, spec string, jwePubKeys []string) error {
	cc, err := cryptoConfig(spec, jwePubKeys)
	if err != nil {
		return err
	}
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	d, err := digest.FromReader(f)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: fi.Size()}
	r, fin, err := ocicrypt.EncryptLayer(cc.EncryptConfig, f, desc)
	if err != nil {
		return err
	}
	w, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	ann, err := fin()
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(ann)
}

func cryptoConfig(spec string, jwePubKeys []string) (encconfig.CryptoConfig, error) {
	ccs := make([]encconfig.CryptoConfig, 0, 2)
	cc, err := encconfig.EncryptWithKeyProvider([][]byte{[]byte(spec)})
	if err != nil {
		return cc, err
	}
	ccs = append(ccs, cc)
	if len(jwePubKeys) > 0 {
		var keys [][]byte
		for _, p := range jwePubKeys {
			b, err := os.ReadFile(p)
			if err != nil {
				return cc, err
			}
			keys = append(keys, b)
		}
		jwe, err := encconfig.EncryptWithJwe(keys)
		if err != nil {
			return cc, err
		}
		ccs = append(ccs, jwe)
	}
	return encconfig.CombineCryptoConfigs(ccs), nil
}

// plainKeyProvider answers one keywrap request of ocicrypt's key provider
// protocol with the options unwrapped.
func plainKeyProvider(in io.Reader, out io.Writer) error {
	var req keyprovider.KeyProviderKeyWrapProtocolInput
	if err := json.NewDecoder(in).Decode(&req); err != nil {
		return err
	}
	if req.Operation != keyprovider.OpKeyWrap {
		return fmt.Errorf("operation %q not supported", req.Operation)
	}
	return json.NewEncoder(out).Encode(keyprovider.KeyProviderKeyWrapProtocolOutput{
		KeyWrapResults: keyprovider.KeyWrapResults{Annotation: req.KeyWrapParams.OptsData},
	})
}
