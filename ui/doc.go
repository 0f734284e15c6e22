// Package ui is discoverd's web page, served at /ui/ by every node, voters
// and proxies alike: the services with their instance counts and leaders, a
// service's instances, meta and live events, and the cluster's nodes.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary (no
// build step, nothing fetched from elsewhere: the machines that run
// discoverd often have no internet). It reads the public HTTP API from the
// browser and follows its Server-Sent Event streams with fetch(), so that
// every request can carry an Authorization header once the server asks for
// a token. The only server-side part beside the files is GET /ui/cluster,
// which asks each node for its /.well-known/status, as a browser cannot
// reach other nodes' addresses itself.
//
// The files and the cluster view are two routes (Page.Files, Page.Cluster)
// so that each takes its own permission: the files hold no data and can be
// served without a token, so that a browser, which cannot put a header on a
// page it navigates to, loads the page and then asks for one; the cluster
// view is a read like any other.
//
// It may import the standard library and api. The HTTP API (httpapi) mounts
// it in its route table; this package imports no server package.
package ui
