// Package writebehind is the write-behind strategy done right: a write is acknowledged only
// once it is in a durable queue, and a background flusher applies it to the database.
//
// The seed popped an item from an in-memory buffer and lost it when the database save
// failed. Here:
//
//   - Durability: Write returns after the record is appended to the Queue (Log: a local
//     append-only log of checksummed records, synced per SyncPolicy, with concurrent
//     writers sharing one sync). A crash replays what was acknowledged and not applied;
//     opening the log truncates a torn tail.
//   - Applying: the flusher takes a batch in queue order, coalesces it per key (the newest
//     write wins), applies each key with Target.Apply, and acknowledges the batch to the
//     queue only afterwards; a failed apply is retried with backoff, never dropped.
//   - Idempotence and versions: Target.Apply writes on top of whatever is there (docsource
//     reads the current version and writes with PutIfVersion, retrying on conflict), and
//     returns the version it wrote. A batch applied but not yet acknowledged when the process
//     died is applied again after the restart: the newest value is written again, so the
//     database ends with every key at its newest acknowledged value; its version may advance
//     once more than the number of writes. Versions never go backwards. Write-behind owns
//     its keys: a direct writer of the same key races with the flusher (last apply wins).
//   - Several app servers, one database: each write carries a stamp (Record.Stamp, its
//     wall-clock time, strictly increasing within a WriteBehind), and Target.Apply ignores
//     a write older than the newest stamp applied to its key (docsource keeps that stamp in
//     a companion record beside the document). So the write made last wins, whichever app
//     server's flusher applies last: a client's two writes of a key sent through two app
//     servers land in the order it made them, as long as the servers' clocks disagree by
//     less than the time between its two writes.
//   - Back-pressure: at most Config.MaxPending writes wait to be applied; a writer beyond
//     that waits up to Config.WaitTimeout and then gets ErrFull, never a silent drop.
//   - Read-your-writes: Get returns the newest pending write of a key until it is applied;
//     Config.OnApplied runs before it leaves the overlay (invalidate the cache there).
//
// Config.Queue is required: New refuses a write-behind without a durable queue with
// cache.ErrConfig. Two queues implement Queue: Log here, and redisqueue (a Redis Stream
// read through a consumer group, at-least-once).
package writebehind
