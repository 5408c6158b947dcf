// Package dashboard serves a live web page of a Strata deployment: the load
// balancer, the app servers, the cache tier and each shard's primary and
// replicas, with per node its health, breaker state, requests per second,
// p99 latency, cache hit ratio, replica lag, rate-limit rejections and
// write-behind depth, a chart of requests per second and p99 over the last
// minutes, and buttons for the chaos actions of `strata up`.
//
// # Use
//
// The caller implements Source (one method, Snapshot, returning a
// Topology), or uses PromSource to build it from the Prometheus endpoints of
// the app servers and the load balancer, and mounts the Dashboard, which is
// an http.Handler:
//
//	d, err := dashboard.New(dashboard.Config{Source: src, ChaosURL: "/admin"})
//	...
//	defer d.Close()
//	mux.Handle("/dashboard/", http.StripPrefix("/dashboard", d))
//
// The routes, relative to the mount point, are listed on Dashboard. The page
// uses relative URLs, so any prefix works.
//
// # Design
//
// One goroutine asks the Source once per Interval (default 1s), encodes
// the snapshot to JSON once, and wakes the open event streams, which each
// send the latest snapshot: the cost of a tick does not grow with the
// number of viewers, and a slow viewer skips snapshots instead of queueing
// them. The load on the system being watched does not reach the page at
// all: at 1,000 document writes per second the page still gets one small
// message per second. The page (plain HTML, CSS and JavaScript, embedded
// with embed, no build step, no external resource) builds its table rows
// once and then only changes the text of cells whose value changed; the
// chart is drawn by hand on a canvas once per snapshot.
//
// # Security
//
// Node names, addresses and notes are rendered with textContent, never as
// HTML, and the page is served with a Content-Security-Policy that allows
// only its own scripts and styles. The dashboard changes nothing itself:
// its endpoints only read, and may be public on a loopback listener;
// Config.Authorize checks every request when they are not. The chaos
// buttons post to Config.ChaosURL with the admin key, which the viewer
// types into the page; it is kept in the tab's sessionStorage and sent
// only in the Authorization header, never in a URL.
//
// # Compared with the usual way
//
// The usual way to watch such a system is Prometheus plus Grafana: two
// more servers, a dashboard definition to keep in step with the metrics,
// and scrape intervals of 15 s. Here the picture is one handler in the
// binary, shows the topology as a diagram of tiers rather than unrelated
// graphs, updates every second, works offline, and can act on the system
// (the chaos buttons). It keeps only the last minutes in memory: long-term
// storage and alerting remain Prometheus's job, and the same metrics are
// there for it.
package dashboard
