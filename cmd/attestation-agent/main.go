// Command attestation-agent serves guest-components' AttestationAgentService
// over ttrpc on a unix socket inside the TEE.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/cocoon-cc/cocoon/guest/aa"
	"github.com/cocoon-cc/cocoon/guest/attester/detect"
	"github.com/cocoon-cc/cocoon/initdata"
	"github.com/cocoon-cc/cocoon/internal/logging"
)

const defaultSocket = "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"

type flags struct {
	config, socket, initDigest, initTOML, tee, tpm, cmdline string
}

func main() {
	var f flags
	// A flag set of our own: go-sev-guest registers flags of its own on the
	// global set, which are no business of this command's.
	fs := flag.NewFlagSet("attestation-agent", flag.ExitOnError)
	multi := func(p *string, names []string, value, usage string) {
		for _, n := range names {
			fs.StringVar(p, n, value, usage)
		}
	}
	multi(&f.config, []string{"c", "config-file", "config_file"}, "", "aa.toml (guest-components' keys)")
	multi(&f.socket, []string{"a", "attestation_sock", "attestation-sock"}, defaultSocket, "ttrpc socket, unix://PATH")
	multi(&f.initDigest, []string{"i", "initdata-digest"}, "", "initdata digest (standard base64) to bind at start")
	multi(&f.initTOML, []string{"t", "initdata-toml"}, "", "initdata TOML file to bind at start and send to the KBS")
	fs.StringVar(&f.tee, "tee", "", "TEE override: sample, snp, tdx, cca, az-snp-vtpm, az-tdx-vtpm or tpm (default: detect)")
	fs.StringVar(&f.tpm, "tpm", "", "TPM device or simulator socket (default /dev/tpmrm0)")
	fs.StringVar(&f.cmdline, "kernel-cmdline", "/proc/cmdline", "kernel command line holding agent.aa_kbc_params")
	fs.Parse(os.Args[1:])
	if err := run(f); err != nil {
		fmt.Fprintln(os.Stderr, "attestation-agent:", err)
		os.Exit(1)
	}
}

func run(f flags) error {
	cfg := aa.DefaultConfig()
	var err error
	if f.config != "" {
		if cfg, err = aa.LoadConfig(f.config); err != nil {
			return err
		}
	}
	if err := cfg.ApplyCmdline(f.cmdline); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	log := logging.New(os.Stderr, cfg.Log.Level, "text")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	aaelPath := aa.DefaultEventLogPath
	if p := os.Getenv("AAEL_PATH"); p != "" {
		aaelPath = p
	}
	att, closeAtt, err := detect.Open(ctx, detect.Options{Tee: f.tee, TPM: f.tpm, AAELPath: aaelPath})
	if err != nil {
		return err
	}
	defer closeAtt()
	toml, digest, err := initData(f)
	if err != nil {
		return err
	}
	agent, err := aa.New(aa.Options{Config: cfg, Attester: att, InitData: toml, EventLogPath: aaelPath, Log: log})
	if err != nil {
		return err
	}
	defer agent.Close()
	if digest != nil {
		bound, err := agent.BindInitData(ctx, digest)
		if err != nil {
			return err
		}
		log.Info("initdata", "bound", bound)
	}
	return serve(ctx, f.socket, agent, log)
}

// initData reads the initdata TOML (and its digest) or a bare digest.
func initData(f flags) (toml, digest []byte, err error) {
	switch {
	case f.initTOML != "":
		if toml, err = os.ReadFile(f.initTOML); err != nil {
			return nil, nil, err
		}
		digest, _, err = initdata.Digest(toml)
		return toml, digest, err
	case f.initDigest != "":
		digest, err = base64.StdEncoding.DecodeString(f.initDigest)
		return nil, digest, err
	}
	return nil, nil, nil
}

func serve(ctx context.Context, socket string, agent *aa.Agent, log interface{ Info(string, ...any) }) error {
	path, ok := strings.CutPrefix(socket, "unix://")
	if !ok {
		return fmt.Errorf("socket %q: only unix:// sockets are served", socket)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSocket != 0 {
		os.Remove(path) // a stale socket of a previous run
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	aa.Register(srv, agent)
	log.Info("serving", "socket", socket, "tee", agent.Tee())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log.Info("shutting down")
	err = srv.Shutdown(sctx)
	os.Remove(path)
	return err
}
