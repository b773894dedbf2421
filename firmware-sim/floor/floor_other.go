//go:build !linux || 386

package main

import "errors"

// run refuses: the floor makes Linux system calls by number.
func run(listen, broker string) error {
	return errors.New("runs on Linux (amd64, arm64, arm) only")
}
