//go:build !linux

package testbroker

import "syscall"

// sysProcAttr returns nil: only Linux can tie mosquitto's life to the test
// binary's.
func sysProcAttr() *syscall.SysProcAttr {
	return nil
}
