// Package docstoretest is the conformance suite every docstore.Store passes: the SQLite and
// PostgreSQL backends and the sharded store (over either) run the same checks, so they are
// interchangeable behind the interface.
//
// Run covers every operation and every error: versions growing by one on every write and
// never going backwards across delete and re-create (tombstones), conditional writes and
// the current version in conflicts, batch reads, cursor listing in bytewise id order,
// tampered and foreign cursors, invalid names, ids and bodies, ids that look like SQL,
// concurrent PutIfVersion with exactly one winner per version (counted), and listing under
// concurrent writes (every document that lives throughout appears exactly once).
//
// Use it from a backend's tests:
//
//	func TestConformance(t *testing.T) {
//		docstoretest.Run(t, func(t *testing.T) docstore.Store {
//			s := open(t) // a fresh, empty store
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
package docstoretest
