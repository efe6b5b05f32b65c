// Command ocienc encrypts one layer blob with ocicrypt, as skopeo copy
// --encryption-key does, for tests: ocicrypt's key provider proto registers
// the same service name as Cocoon's, so it runs in a process of its own.
//
//	ocienc IN OUT MEDIATYPE KEYPROVIDER-SPEC   (prints the annotations as JSON)
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/containers/ocicrypt"
	encconfig "github.com/containers/ocicrypt/config"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: ocienc IN OUT MEDIATYPE KEYPROVIDER-SPEC")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3], os.Args[4]); err != nil {
		fmt.Fprintln(os.Stderr, "ocienc:", err)
		os.Exit(1)
	}
}

func run(in, out, mediaType, spec string) error {
	cc, err := encconfig.EncryptWithKeyProvider([][]byte{[]byte(spec)})
	if err != nil {
		return err
	}
	plain, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(plain), Size: int64(len(plain))}
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
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
