package engines

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"
)

// TestNewNodeMovesOffATakenPort: a node whose port another process took between FreePort and
// the server's bind starts on another port instead of failing.
func TestNewNodeMovesOffATakenPort(t *testing.T) {
	binDir, err := postgresBinDir()
	var missing *MissingBinaryError
	if errors.As(err, &missing) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	acct, err := serviceAccount()
	if err != nil {
		t.Fatal(err)
	}
	c := &PostgresCluster{opts: PostgresOptions{Dir: t.TempDir()}, binDir: binDir, acct: acct}
	n, err := c.newNode("primary")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := c.tool(ctx, "initdb", "-D", n.dataDir, "-U", pgUser, "-A", "trust", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	taken := n.port
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(taken)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := n.startNew(ctx); err != nil {
		t.Fatalf("startNew with its port taken: %v", err)
	}
	defer n.close()
	if n.port == taken {
		t.Fatalf("the node claims the taken port %d", taken)
	}
	var one int
	if err := n.QueryRow(ctx, "postgres", "SELECT 1", nil, &one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 on the new port %d: %v", n.port, err)
	}
}
