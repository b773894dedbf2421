//go:build !linux

package upstream

// hangupWatch is Linux only: elsewhere no connection is watched, and its
// reader reads until the socket says it is empty.
type hangupWatch struct{}

func (*hangupWatch) add(*connWriter)    {}
func (*hangupWatch) remove(*connWriter) {}
