package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cocoon-cc/cocoon/image/pull"
	"golang.org/x/term"
)

// progressPrinter renders pull progress on w: a bar redrawn in place on a
// terminal, a plain line every few seconds otherwise (logs, CI).
type progressPrinter struct {
	w     io.Writer
	tty   bool
	every time.Duration
	last  time.Time
}

func newProgressPrinter(f *os.File) *progressPrinter {
	tty := term.IsTerminal(int(f.Fd()))
	every := 5 * time.Second
	if tty {
		every = 0
	}
	return &progressPrinter{w: f, tty: tty, every: every}
}

func (p *progressPrinter) report(s pull.Progress) {
	if !s.Finished && s.Done > 0 && time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	line := progressLine(s)
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		if s.Finished {
			fmt.Fprintln(p.w)
		}
		return
	}
	fmt.Fprintln(p.w, line)
}

// progressLine is e.g. "[=======>      ] 52% 61.2/117.0 MiB 1/3 layers 48.1 MiB/s".
func progressLine(s pull.Progress) string {
	const width = 24
	frac := 1.0
	if s.Total > 0 {
		frac = min(float64(s.Done)/float64(s.Total), 1)
	}
	filled := int(frac * width)
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	rate := 0.0
	if sec := s.Elapsed.Seconds(); sec > 0 {
		rate = float64(s.Done) / sec / (1 << 20)
	}
	return fmt.Sprintf("[%s] %3.0f%% %.1f/%.1f MiB %d/%d layers %.1f MiB/s",
		bar, frac*100, float64(s.Done)/(1<<20), float64(s.Total)/(1<<20), s.LayersDone, s.Layers, rate)
}
