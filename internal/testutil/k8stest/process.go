package k8stest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// process is one of the cluster's daemons, its output in a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// run starts a daemon in the node's network namespace (netns true) or the
// host's, and stops it at teardown.
func (c *Cluster) run(t testing.TB, name string, netns bool, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, log: filepath.Join(c.dir, "logs", name+".log"), done: make(chan struct{})}
	if err := os.MkdirAll(filepath.Dir(p.log), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if netns {
		args = append([]string{"--net=" + c.slot.NetnsPath(), "--", bin}, args...)
		bin = "nsenter"
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	// Killed with the test binary, whatever its end.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	c.procs = append(c.procs, p)
	t.Cleanup(p.stop)
	return p
}

// exited says whether the daemon has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// tail is the end of the daemon's log.
func (p *process) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- %s (%s):\n%s\n", p.name, p.log, bytes.Join(lines, []byte("\n")))
}
