package testenv

import (
	"os/exec"
	"runtime"
	"sync"
)

// The kernel sends a process's parent-death signal (Pdeathsig) when the
// thread that forked it ends, not when the parent process does, and Go
// ends a thread whose goroutine exits while locked to it, which the
// namespace helpers do after entering a namespace. A flanneld forked from
// such a thread is killed as soon as the thread is retired, mid-test. So
// every flanneld is forked from one goroutine locked to a thread that
// lives as long as the test binary: the signal still fires when the binary
// dies (no orphan flanneld), and never earlier.
var spawner struct {
	once sync.Once
	reqs chan spawnRequest
}

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// startSteady starts cmd from the spawner's thread.
func startSteady(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread stays
			for r := range spawner.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawner.reqs <- spawnRequest{cmd: cmd, done: done}
	return <-done
}
