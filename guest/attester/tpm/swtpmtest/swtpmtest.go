// Package swtpmtest runs swtpm, a software TPM 2.0 built on the reference
// implementation (libtpms), for tests. Tests that need it skip when the
// Debian packages are missing, and fail instead when $CI is set, because CI
// installs them: apt-get install swtpm swtpm-tools tpm2-tools.
package swtpmtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Packages are the Debian packages the TPM tests need.
const Packages = "swtpm swtpm-tools tpm2-tools"

// TPM is a running swtpm.
type TPM struct {
	// Addr is the command socket as tpm.Options.TPM spells it.
	Addr string
	// TCTI points tpm2-tools at the same TPM (TPM2TOOLS_TCTI); empty for a
	// unix socket TPM.
	TCTI string
}

// Require skips (or, under CI, fails) the test when a program is missing.
func Require(t testing.TB, program, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(program); err == nil {
		return
	}
	msg := fmt.Sprintf("!!! %s NOT FOUND: install the Debian package %q (apt-get install %s) !!!", program, pkg, Packages)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Start runs swtpm with its command socket on a free loopback TCP port.
func Start(t testing.TB) *TPM {
	t.Helper()
	Require(t, "swtpm", "swtpm")
	dir := t.TempDir()
	var lastErr error
	for range 5 {
		port, err := freePortPair()
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err = run(t, dir, "tcp", addr,
			fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1))
		if err == nil {
			return &TPM{Addr: "tcp://" + addr, TCTI: fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port)}
		}
		lastErr = err // most likely a port taken since we probed it
	}
	t.Fatalf("swtpm did not start: %v", lastErr)
	return nil
}

// StartUnix runs swtpm with its command socket on a unix socket.
func StartUnix(t testing.TB) *TPM {
	t.Helper()
	Require(t, "swtpm", "swtpm")
	dir := t.TempDir()
	sock := filepath.Join(dir, "cmd.sock")
	err := run(t, dir, "unix", sock, "type=unixio,path="+sock, "type=unixio,path="+filepath.Join(dir, "ctrl.sock"))
	if err != nil {
		t.Fatalf("swtpm did not start: %v", err)
	}
	return &TPM{Addr: "unix://" + sock}
}

// run starts swtpm on a fresh state directory and waits for its command
// socket; the test's cleanup stops it.
func run(t testing.TB, dir, network, addr, server, ctrl string) error {
	state, err := os.MkdirTemp(dir, "state")
	if err != nil {
		return err
	}
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--server", server, "--ctrl", ctrl,
		"--tpmstate", "dir="+state,
		"--flags", "not-need-init,startup-clear")
	log, err := os.Create(filepath.Join(state, "swtpm.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		select {
		case err := <-exited:
			out, _ := os.ReadFile(log.Name())
			return fmt.Errorf("swtpm exited (%v): %s", err, out)
		default:
		}
		if c, err := net.Dial(network, addr); err == nil {
			c.Close()
			t.Cleanup(stop)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return fmt.Errorf("swtpm did not listen on %s", addr)
}

// freePortPair finds a loopback port p with p+1 also free (swtpm's control
// socket). Another process may take them before swtpm binds: Start retries.
func freePortPair() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1)))
		l.Close()
		if err == nil {
			l2.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free loopback port pair")
}
