//go:build !linux

package upstream_test

import "syscall"

// sysProcAttr returns nil: only Linux can tie mosquitto's life to the test
// binary's.
func sysProcAttr() *syscall.SysProcAttr { return nil }
