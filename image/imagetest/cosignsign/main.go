// Command cosignsign signs an image as `cosign sign --key` does, for the
// tests and the demo where cosign is not installed (Debian ships none, and
// Debian's skopeo has sigstore signing disabled): the simple signing
// payload of sigstore/sigstore, signed with its ECDSA signer, pushed with
// go-containerregistry as the sha256-<digest>.sig attachment.
//
//	cosignsign generate-key-pair DIR    writes DIR/cosign.key and DIR/cosign.pub
//	cosignsign KEY IMAGE [IDENTITY]     signs IMAGE (a tag) with KEY, naming
//	                                    IDENTITY (default IMAGE), as cosign
//	                                    sign --sign-container-identity
package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

func main() {
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "generate-key-pair":
		err = generate(os.Args[2])
	case len(os.Args) == 3:
		err = sign(os.Args[1], os.Args[2], os.Args[2])
	case len(os.Args) == 4:
		err = sign(os.Args[1], os.Args[2], os.Args[3])
	default:
		err = errors.New("usage: cosignsign generate-key-pair DIR | cosignsign KEY IMAGE [IDENTITY]")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cosignsign:", err)
		os.Exit(1)
	}
}

func generate(dir string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	priv, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cosign.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "cosign.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

func sign(keyPath, image, identity string) error {
	b, err := os.ReadFile(keyPath)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return errors.New("key is not PEM")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return err
	}
	signer, err := signature.LoadSignerVerifier(key, crypto.SHA256)
	if err != nil {
		return err
	}
	ref, err := name.ParseReference(image)
	if err != nil {
		return err
	}
	auth := remote.WithAuthFromKeychain(authn.DefaultKeychain) // $DOCKER_CONFIG, as cosign
	desc, err := remote.Head(ref, auth)
	if err != nil {
		return err
	}
	digest := ref.Context().Digest(desc.Digest.String())
	body, err := payload.Cosign{Image: digest, ClaimedIdentity: identity}.MarshalJSON()
	if err != nil {
		return err
	}
	sig, err := signer.SignMessage(bytes.NewReader(body))
	if err != nil {
		return err
	}
	layer := static.NewLayer(body, "application/vnd.dev.cosign.simplesigning.v1+json")
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: layer,
		Annotations: map[string]string{"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(sig)}})
	if err != nil {
		return err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	tag := ref.Context().Tag(strings.Replace(desc.Digest.String(), ":", "-", 1) + ".sig")
	if err := remote.Write(tag, img, auth); err != nil {
		return err
	}
	fmt.Println(tag.Name())
	return nil
}
