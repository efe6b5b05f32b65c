package agent

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// TestWithheldExecOutlivesDrain: an exec whose withheld output the guest
// drained before the host asked for its stdout is kept until the host was
// told of every stream, so that the host's stdout reader still gets its
// withheld answer (the log's notice) and not "not found".
func TestWithheldExecOutlivesDrain(t *testing.T) {
	a := &Agent{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	p, err := newProcess("e1", &specs.Process{Args: []string{"cat"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer p.closeAll()
	c := &container{id: "c1", execs: map[string]*process{"e1": p}}
	req := &pb.ReadStreamRequest{ContainerId: "c1", ExecId: "e1"}
	a.withheld(context.Background(), req, p, p.stderr, nil)
	for _, end := range p.childEnds[1:] {
		end.Close() // the process exited: its output ends
	}
	<-p.drained
	reaped := make(chan struct{})
	go func() {
		c.reapExec(p)
		close(reaped)
	}()
	select {
	case <-reaped:
		t.Fatal("the exec was forgotten before the host was told its stdout is withheld")
	case <-time.After(100 * time.Millisecond):
	}
	if r := a.withheld(context.Background(), req, p, p.stdout, nil); !r.Withheld {
		t.Fatalf("stdout's answer %+v, want withheld", r)
	}
	select {
	case <-reaped:
	case <-time.After(10 * time.Second):
		t.Fatal("the exec outlived the host's last answer")
	}
	if _, ok := c.execs["e1"]; ok {
		t.Error("the reaped exec is still known")
	}
}
