// Package logging sets up the structured logger every binary uses.
package logging

import (
	"io"
	"log/slog"
	"strings"
)

// New returns a slog logger writing to w; format is "json" or "text".
func New(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
