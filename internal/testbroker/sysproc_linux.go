//go:build linux

package testbroker

import "syscall"

// sysProcAttr makes the kernel kill mosquitto when the test binary dies
// without running its cleanups (a panic, a -timeout, a SIGKILL).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
