# tests/hostile.sh - sourced by test.sh: hostile clients, TLS scanners and
# memory flatness (issue 7).  Uses test.sh's helpers (start_lb, conf_http,
# cget, pass, fail, ...).  HOSTILE_TESTS lists the test functions defined
# here; test.sh runs them with the rest.
HOSTILE_TESTS=""
