package proc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CPUSeconds is the user and system time pid has used so far, with
// children that of its reaped children too (the commands it ran).
func CPUSeconds(pid int, children bool) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(s[i+2:])
	n := 2 // utime, stime
	if children {
		n = 4 // and cutime, cstime
	}
	if len(fields) < 11+n {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	var sum float64
	for _, f := range fields[11 : 11+n] {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		sum += v
	}
	return sum / 100, nil // USER_HZ is 100 on Linux
}

// PeakRSSMiB is pid's peak resident set size (VmHWM) in MiB.
func PeakRSSMiB(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) < 2 {
				break
			}
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}
