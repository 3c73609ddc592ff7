// Command pause is the pod sandbox program of Twill's lab: it holds a pod's
// namespaces open by sleeping until it is told to stop, reaps any child that
// is re-parented to it (it runs as PID 1 when the pod shares a PID
// namespace), and exits 0 on SIGTERM or SIGINT. It is built static
// (CGO_ENABLED=0) so the image needs nothing but this file.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/twill-net/twill/version"
)

// readyLine is printed once the signal handlers are installed.
const readyLine = "pause: holding the pod's namespaces until SIGTERM or SIGINT"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "-v", "--version", "-version":
			fmt.Println("pause", version.Version)
			return
		default:
			fmt.Fprintf(os.Stderr, "pause takes no arguments (got %q); it sleeps until SIGTERM or SIGINT\n", os.Args[1:])
			os.Exit(2)
		}
	}
	os.Exit(run(make(chan os.Signal, 8)))
}

// run waits for signals on sigs: SIGCHLD reaps exited children, SIGTERM and
// SIGINT end the program with status 0. It says on stderr when it is ready:
// a signal that arrives earlier gets the default action.
func run(sigs chan os.Signal) int {
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	// Children that exited before the handler was installed sent their
	// SIGCHLD to nobody.
	reap()
	fmt.Fprintln(os.Stderr, readyLine)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		return 0
	}
	return 0
}

// reap collects every child that has exited, so none stays a zombie.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
