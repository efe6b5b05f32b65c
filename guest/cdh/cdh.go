// Package cdh is the confidential data hub: the guest daemon that hands
// workloads and the guest agent KBS resources, sealed secrets, encrypted
// volumes and image layer keys, releasing nothing before attestation.
// Each concern lives in its own package; Hub wires them together.
package cdh

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/guest/cdh/config"
	"github.com/cocoon-cc/cocoon/guest/cdh/kbc"
	"github.com/cocoon-cc/cocoon/guest/cdh/keyprovider"
	"github.com/cocoon-cc/cocoon/guest/cdh/resource"
	"github.com/cocoon-cc/cocoon/guest/cdh/sealed"
	"github.com/cocoon-cc/cocoon/guest/cdh/securemount"
)

// Hub serves the CDH APIs.
type Hub struct {
	cfg      *config.Config
	kbs      *kbc.KBC
	unsealer *sealed.Unsealer
	mounter  *securemount.Mounter
	// hostLoopback is where the host's loopback is reached from the
	// guest, for images on a registry there (pull.Options.HostLoopback).
	hostLoopback string
}

// SetHostLoopback sets where the guest reaches the host's loopback.
func (h *Hub) SetHostLoopback(addr string) { h.hostLoopback = addr }

// New returns a Hub for cfg that attests with a; initData is the initdata
// TOML the guest was launched with (nil if none).
func New(cfg *config.Config, a attester.Attester, initData []byte) (*Hub, error) {
	k, err := kbc.New(kbc.Config{URL: cfg.KBC.URL, CertPEM: cfg.KBC.KBSCert, InitData: initData}, a)
	if err != nil {
		return nil, err
	}
	u := &sealed.Unsealer{KBS: k, SkipVerification: cfg.SkipSealedSecretVerification}
	return &Hub{cfg: cfg, kbs: k, unsealer: u, mounter: &securemount.Mounter{KBS: k, Sealed: u}}, nil
}

// GetResource returns the resource a kbs:// URI names.
func (h *Hub) GetResource(ctx context.Context, uri string) ([]byte, error) {
	u, err := resource.Parse(uri)
	if err != nil {
		return nil, err
	}
	return h.kbs.GetResource(ctx, u)
}

// UnsealSecret verifies and unseals a sealed secret.
func (h *Hub) UnsealSecret(ctx context.Context, secret []byte) ([]byte, error) {
	return h.unsealer.Unseal(ctx, secret)
}

// SecureMount mounts an encrypted volume.
func (h *Hub) SecureMount(ctx context.Context, r *securemount.Request) error {
	return h.mounter.Mount(ctx, r)
}

// UnwrapKey answers an ocicrypt key provider unwrap request.
func (h *Hub) UnwrapKey(ctx context.Context, input []byte) ([]byte, error) {
	return keyprovider.UnwrapKey(ctx, h.kbs, input)
}

// WriteCredentials fetches cdh.toml's [[credentials]] into their files
// (under the CDH's tmpfs directory, never on a persistent disk).
func (h *Hub) WriteCredentials(ctx context.Context) error {
	for _, c := range h.cfg.Credentials {
		data, err := h.GetResource(ctx, c.ResourceURI)
		if err != nil {
			return fmt.Errorf("credential %s: %w", c.ResourceURI, err)
		}
		err = writeFile(c.Path, data)
		clear(data)
		if err != nil {
			return fmt.Errorf("credential %s: %w", c.ResourceURI, err)
		}
	}
	return nil
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}
