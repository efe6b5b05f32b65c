package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cocoon-cc/cocoon/guest/telemetry"
	"github.com/cocoon-cc/cocoon/guest/telemetry/feed"
	"github.com/cocoon-cc/cocoon/guest/telemetry/otlpin"
	"github.com/cocoon-cc/cocoon/guest/telemetry/ship"
	"github.com/cocoon-cc/cocoon/internal/testutil/kbstest"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// TestWithheldShipped: withheld output goes through the feed to the
// shipper (a real one, with an SVID from a real KBS) whose owner's
// endpoint is down: the first withheld answer names the endpoint at once,
// the next one comes once the output ended and counts the lines the
// 1 MiB buffer could not keep, as the shipper does.
func TestWithheldShipped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, ca := kbstest.SPIFFESource(t, ctx, "/ns/test/agent")
	cfg, err := telemetry.ParseConfig(fmt.Sprintf("endpoint = \"127.0.0.1:1\"\nca = '''%s'''\nbuffer_mib = 1\n", ca))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sh := ship.New(cfg, src, log)
	go sh.Run(ctx)
	sock := filepath.Join(t.TempDir(), "telemetry.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go otlpin.New(sh, log).ServeGRPC(ctx, l)
	fd, err := feed.Dial(sock, cfg.Endpoint, log)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	a := &Agent{cfg: Config{Telemetry: fd}, log: log}

	p, err := newProcess("c1", &specs.Process{Args: []string{"app"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer p.closeAll()
	p.src = feed.Source{ContainerID: "c1", ContainerName: "app"}
	// The container's ends: 3 MiB of lines on stdout, then both closed.
	stdout, stderr := p.childEnds[1], p.childEnds[2]
	go func() {
		line := strings.Repeat("x", 99) + "\n"
		for range 30000 {
			stdout.WriteString(line)
		}
		stdout.Close()
		stderr.Close()
	}()
	req := &pb.ReadStreamRequest{ContainerId: "c1", ExecId: "c1"}
	first := a.withheld(ctx, req, p, p.stdout, nil)
	if !first.Withheld || first.WithheldTo != "127.0.0.1:1" || first.WithheldDropped != 0 {
		t.Fatalf("first answer %+v", first)
	}
	last := a.withheld(ctx, req, p, p.stdout, nil)
	dropped := sh.Counts(telemetry.Logs).Dropped.Load()
	if last.WithheldDropped == 0 || last.WithheldDropped != uint64(dropped) {
		t.Errorf("the answer after the end counts %d dropped lines, the shipper %d", last.WithheldDropped, dropped)
	}
}
