package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clkTck is USER_HZ, the unit of /proc/<pid>/stat's CPU times; it is 100
// on every Linux this runs on.
const clkTck = 100

// cpuTime returns the user+system CPU a process has used so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may hold spaces: fields
	// count from after the last ')'. utime and stime are fields 14 and 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * time.Second / clkTck
}

// cpuOf sums cpuTime over every process whose command name is comm:
// "postgres" covers the server and all its backends.
func cpuOf(comm string) time.Duration {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var total time.Duration
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/comm")
		if err != nil || strings.TrimSpace(string(b)) != comm {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		total += cpuTime(pid)
	}
	return total
}

// machineBusy returns the CPU time all cores have spent busy so far
// (/proc/stat: everything but idle, iowait and steal), kernel threads
// included: the file system's writeback of PostgreSQL's writes shows here
// and in no process of the bench. steal is the time the hypervisor gave
// the cores to other machines: while it is high, every figure is slower.
func machineBusy() (busy, steal time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var n [8]int64
	for i := range min(len(f)-1, len(n)) {
		n[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	tick := func(v int64) time.Duration { return time.Duration(v) * time.Second / clkTck }
	return tick(n[0] + n[1] + n[2] + n[5] + n[6]), tick(n[7]) // guest time is within user
}

// cpuSample is the CPU used so far by the process under test, by the
// shared services behind it, and by the whole machine.
type cpuSample struct{ proc, postgres, redis, machine, steal time.Duration }

func sampleCPU(pid int) cpuSample {
	s := cpuSample{postgres: cpuOf("postgres"), redis: cpuOf("redis-server")}
	s.machine, s.steal = machineBusy()
	if pid > 0 {
		s.proc = cpuTime(pid)
	}
	return s
}

// perRequest turns the CPU used between two samples into µs per request.
func (s cpuSample) perRequest(later cpuSample, requests uint64) (proc, postgres, redis, machine float64) {
	if requests == 0 {
		return 0, 0, 0, 0
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(requests) }
	return us(later.proc - s.proc), us(later.postgres - s.postgres), us(later.redis - s.redis), us(later.machine - s.machine)
}

// stealShare is the share of the cores' time, between two samples d
// apart, that the hypervisor gave to other machines.
func (s cpuSample) stealShare(later cpuSample, d time.Duration) float64 {
	return float64(later.steal-s.steal) / float64(d) / float64(runtime.NumCPU())
}
