package broker

import (
	"context"
	"log/slog"
)

// quietHandler passes mochi's slog records on to another handler (zerolog's
// SlogHandler), lowering the routine ones to debug level so that the
// gateway's console is not flooded:
//
//   - info records (starting, stopping, listeners and hooks attached);
//   - the message-less warning mochi's listener logs for every client
//     connection that ends with an error, which includes every connection
//     closed without DISCONNECT and every client disconnected at shutdown.
//
// Other warnings and errors keep their level.
type quietHandler struct {
	next slog.Handler
}

// Enabled reports whether a record at level may be logged.
func (h quietHandler) Enabled(ctx context.Context, level slog.Level) bool {
	if level >= slog.LevelInfo && level < slog.LevelWarn {
		level = slog.LevelDebug
	}
	return h.next.Enabled(ctx, level)
}

// Handle logs r, at a lower level if it is routine.
func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	switch {
	case r.Level >= slog.LevelInfo && r.Level < slog.LevelWarn:
		r.Level = slog.LevelDebug
	case r.Level >= slog.LevelWarn && r.Level < slog.LevelError && r.Message == "":
		r.Level = slog.LevelDebug
		r.Message = "client connection ended"
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a handler that adds attrs to every record.
func (h quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietHandler{h.next.WithAttrs(attrs)}
}

// WithGroup returns a handler that puts later attributes in group name.
func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.next.WithGroup(name)}
}
