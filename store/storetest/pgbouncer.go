package storetest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PgBouncer starts a PgBouncer (Debian's pgbouncer package, which
// deploy/dev/services.sh installs) in transaction pooling mode in front of
// the PostgreSQL that dsn names, for dsn's user and database only, with at
// most poolSize server connections, and returns dsn pointing at it. It
// listens on a free loopback port and is stopped when the test ends.
//
// PgBouncer authenticates clients with SCRAM against a user list holding
// dsn's password, and logs in to PostgreSQL with the same password (a DSN
// without a password: no authentication, as PostgreSQL then trusts the
// user).
//
// PgBouncer refuses to run as root: under root it runs as the postgres OS
// user (or nobody), so its configuration lives in a directory of its own
// under os.TempDir, owned by that user, not in t.TempDir, whose parents
// only root may enter. It is removed when the test ends.
//
// Without a pgbouncer executable the test stops as for a missing service
// (Unavailable).
func PgBouncer(t testing.TB, dsn string, poolSize int) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin, err = exec.LookPath("/usr/sbin/pgbouncer") // Debian's, off a non-root PATH
	}
	if err != nil {
		Unavailable(t, "PgBouncer", err)
	}
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" || u.User == nil {
		t.Fatalf("storetest: PgBouncer needs a postgres:// DSN with a host and a user")
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "5432"
	}
	db := strings.TrimPrefix(u.Path, "/")
	name := u.User.Username()
	pw, _ := u.User.Password()
	for _, s := range []string{host, db, name, pw} {
		if strings.ContainsAny(s, "\"' \n\\;=") {
			t.Fatalf("storetest: PgBouncer cannot quote %q in its configuration", s)
		}
	}

	var cred *runAs
	if os.Geteuid() == 0 {
		cred = unprivileged(t)
	}
	dir, err := os.MkdirTemp("", "bulkhead-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, cred.uid, cred.gid); err != nil {
			t.Fatal(err)
		}
	}
	write := func(file, text string) string {
		path := filepath.Join(dir, file)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if cred != nil {
			if err := os.Chown(path, cred.uid, cred.gid); err != nil {
				t.Fatal(err)
			}
		}
		return path
	}
	users := write("userlist.txt", fmt.Sprintf("%q %q\n", name, pw))
	authType := "scram-sha-256"
	if pw == "" {
		authType = "trust"
	}
	// From 1.21 PgBouncer can track prepared statements, and later
	// versions do by default: turned off, it is the pooler the tests are
	// about, whatever version the distribution ships.
	var extra string
	if v := pgbouncerVersion(bin); v[0] > 1 || v[0] == 1 && v[1] >= 21 {
		extra = "max_prepared_statements = 0\n"
	}

	// A free port can be taken by someone else between our look and
	// PgBouncer's bind: then try another.
	for attempt := 1; ; attempt++ {
		listen := freePort(t)
		ini := write("pgbouncer.ini", fmt.Sprintf(`[databases]
%s = host=%s port=%s dbname=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = %s
auth_file = %s
pool_mode = transaction
default_pool_size = %d
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
max_db_connections = %d
server_lifetime = 3600
log_connections = 0
log_disconnections = 0
%s`, db, host, port, db, listen, authType, users, poolSize, poolSize, extra))
		proc, err := startPgBouncer(t, bin, ini, cred, listen)
		if err == nil {
			t.Cleanup(proc.stop)
			out := *u
			out.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(listen))
			return out.String()
		}
		if attempt == 3 || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("storetest: starting PgBouncer: %v", err)
		}
	}
}

// pgbouncerVersion returns the major and minor version that bin reports
// ("PgBouncer 1.18.0"), or zeros.
func pgbouncerVersion(bin string) [2]int {
	out, _ := exec.Command(bin, "--version").Output()
	var v [2]int
	first, _, _ := strings.Cut(string(out), "\n")
	if _, ver, ok := strings.Cut(first, "PgBouncer "); ok {
		parts := strings.SplitN(ver, ".", 3)
		if len(parts) >= 2 {
			v[0], _ = strconv.Atoi(parts[0])
			v[1], _ = strconv.Atoi(parts[1])
		}
	}
	return v
}

// runAs is the OS user PgBouncer runs as when the tests run as root.
type runAs struct{ uid, gid int }

func unprivileged(t testing.TB) *runAs {
	t.Helper()
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err1 == nil && err2 == nil {
			return &runAs{uid, gid}
		}
	}
	t.Fatalf("storetest: running as root, and neither a postgres nor a nobody user to run PgBouncer as")
	return nil
}

// pgbouncerProc is a running PgBouncer and its log.
type pgbouncerProc struct {
	t    testing.TB
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{} // closed when it has exited
}

func startPgBouncer(t testing.TB, bin, ini string, cred *runAs, port int) (*pgbouncerProc, error) {
	p := &pgbouncerProc{t: t, log: new(lockedBuffer), done: make(chan struct{})}
	p.cmd = exec.Command(bin, ini)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = sysProcAttr(cred)
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for {
		select {
		case <-p.done:
			return nil, fmt.Errorf("PgBouncer exited: %s", p.log.String())
		case <-ctx.Done():
			p.stop()
			return nil, fmt.Errorf("PgBouncer did not listen on %s within 10s: %s", addr, p.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		// Its "listening on" line comes after the bind: a connection
		// before it could reach whoever else holds the port.
		if !strings.Contains(p.log.String(), "listening on "+addr) {
			continue
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return p, nil
		}
	}
}

// stop ends PgBouncer (SIGTERM: its immediate shutdown; SIGINT would wait
// for clients) and, if the test failed, logs what it said.
func (p *pgbouncerProc) stop() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	if p.t.Failed() {
		p.t.Logf("PgBouncer's log:\n%s", p.log.String())
	}
}

// lockedBuffer is a bytes.Buffer that the process's output copier writes
// while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // keep the start, where failures to start are told
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
