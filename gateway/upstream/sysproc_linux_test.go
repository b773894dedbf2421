//go:build linux

package upstream_test

import "syscall"

// sysProcAttr makes the kernel kill mosquitto when the test binary dies
// without running its cleanups.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
