package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Figures read from /proc (Linux). Each reader returns an error elsewhere,
// and the report then says the figure was not measured.

// clockTicks returns the unit of the times in /proc/<pid>/stat: the kernel's
// USER_HZ, given to every process in its auxiliary vector as AT_CLKTCK (what
// getconf CLK_TCK prints). It is 100 on every Linux architecture in use; 100
// is also the answer when the vector cannot be read.
func clockTicks() int64 {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	word := strconv.IntSize / 8
	for i := 0; i+2*word <= len(b); i += 2 * word {
		var k, v uint64
		if word == 8 {
			k, v = binary.NativeEndian.Uint64(b[i:]), binary.NativeEndian.Uint64(b[i+8:])
		} else {
			k, v = uint64(binary.NativeEndian.Uint32(b[i:])), uint64(binary.NativeEndian.Uint32(b[i+4:]))
		}
		if k == atClkTck && v > 0 {
			return int64(v)
		}
		if k == 0 {
			break
		}
	}
	return 100
}

// procCPU returns the CPU time (user + system, of every thread, living or
// exited) a process has used, from /proc/<pid>/stat; its resolution is one
// clock tick (10 ms).
func procCPU(pid int, ticks int64) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces or
	// parentheses itself: the fields that follow start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/pid/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc/pid/stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration((ut + st) * int64(time.Second) / ticks), nil
}

// procRSS returns the resident set size of a process, in bytes (VmRSS of
// /proc/<pid>/status).
func procRSS(pid int) (int64, error) {
	v, err := procStatusField(pid, "VmRSS:")
	if err != nil {
		return 0, err
	}
	return v * 1024, nil
}

func procStatusField(pid int, name string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name); ok {
			fs := strings.Fields(rest)
			if len(fs) == 0 {
				break
			}
			return strconv.ParseInt(fs[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", name, pid)
}

// procFileLimit returns the soft limit on open files of a process, from
// /proc/<pid>/limits.
func procFileLimit(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			fs := strings.Fields(rest)
			if len(fs) > 0 {
				if fs[0] == "unlimited" {
					return 1 << 62, nil
				}
				return strconv.ParseInt(fs[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no open files limit")
}

// procOpenFiles counts the descriptors a process holds open, from
// /proc/<pid>/fd.
func procOpenFiles(pid int) (int, error) {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(es), err
}

// sysInts reads the numbers of a file of /proc/sys (ip_local_port_range
// holds two).
func sysInts(file string) ([]int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var vs []int
	for _, f := range strings.Fields(string(b)) {
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("%s is empty", file)
	}
	return vs, nil
}

// machineTicks returns the busy and total clock ticks of all CPUs so far,
// from the first line of /proc/stat; busy is all but idle and iowait.
func machineTicks() (busy, total int64, err error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, errors.New("empty /proc/stat")
	}
	fs := strings.Fields(sc.Text())
	if len(fs) < 5 || fs[0] != "cpu" {
		return 0, 0, errors.New("malformed /proc/stat")
	}
	for i, s := range fs[1:] {
		if i >= 8 { // guest times are already counted in user and nice
			break
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}

// A machine describes where the figures were measured.
type machine struct {
	CPU        string `json:"cpu"`
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	Kernel     string `json:"kernel,omitempty"`
	LoadAvg    string `json:"loadavg_at_start,omitempty"`
	ClockTicks int64  `json:"clock_ticks_per_s"`
}

func describeMachine(ticks int64) machine {
	m := machine{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(), ClockTicks: ticks}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if m.CPU == "" {
		m.CPU = runtime.GOARCH
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if fs := strings.Fields(string(b)); len(fs) >= 3 {
			m.LoadAvg = strings.Join(fs[:3], " ")
		}
	}
	return m
}

// tcpQueue returns the bytes queued on the loopback TCP socket from
// localPort to remotePort, from /proc/net/tcp and tcp6: sent but not yet
// acknowledged or not yet sent (tx), and received but not yet read (rx).
func tcpQueue(localPort, remotePort int) (tx, rx int64, err error) {
	want := fmt.Sprintf(":%04X", localPort)
	wantRem := fmt.Sprintf(":%04X", remotePort)
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) < 5 || !strings.HasSuffix(f[1], want) || !strings.HasSuffix(f[2], wantRem) {
				continue
			}
			t, r, ok := strings.Cut(f[4], ":")
			if !ok {
				continue
			}
			tx, err1 := strconv.ParseInt(t, 16, 64)
			rx, err2 := strconv.ParseInt(r, 16, 64)
			if err := errors.Join(err1, err2); err != nil {
				return 0, 0, err
			}
			return tx, rx, nil
		}
	}
	return 0, 0, fmt.Errorf("no TCP socket %d → %d", localPort, remotePort)
}
