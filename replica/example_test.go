package replica_test

import (
	"fmt"
	"time"

	"github.com/strata-project/strata/replica"
)

func Example() {
	// One shard: a primary and two replicas. A prober would feed observations; here they are
	// given by hand at named instants.
	r, _ := replica.NewRouter(replica.Config{MaxLag: 2 * time.Second}, []string{"primary", "replica1", "replica2"}, 0)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.Observe(replica.Observation{Node: 0, At: t0, Role: replica.RolePrimary, LSN: 1000})
	r.Observe(replica.Observation{Node: 1, At: t0, Role: replica.RoleReplica, LSN: 1000})
	r.Observe(replica.Observation{Node: 2, At: t0, Role: replica.RoleReplica, LSN: 400})

	w, _ := r.Primary(t0)
	fmt.Println("writes go to", r.Name(w))

	// A session wrote at LSN 900: only a replica that replayed it may serve the session.
	signer, _ := replica.NewSigner([]byte("a secret of at least 16 bytes"))
	text := signer.Encode(replica.Token{}.Add(7, 900)) // shard 7
	tok, _ := signer.Decode(text)
	i, _ := r.PickRead(t0, tok.For(7))
	fmt.Println("session read goes to", r.Name(i))
	r.Done(i)

	_, err := signer.Decode(text[:len(text)-1] + "A")
	fmt.Println(err != nil)
	// Output:
	// writes go to primary
	// session read goes to replica1
	// true
}
