"""End-to-end tests: the whole graph, dagster-daemon, the webserver, a browser, several processes."""
